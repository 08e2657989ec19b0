/**
 * GroupNorm over NHWC (eps 1e-5, biased variance, as `groupNorm` of src/model/layers.ts) with
 * the residual block's optional fused scale-shift and SiLU:
 *
 *   y = act((xhat · gamma + beta) · (1 + scale) + shift),  xhat = (x - mean) · rstd,
 *
 * scale = ss[b, 0:C], shift = ss[b, C:2C] (the time MLP's output), act = SiLU or identity. The
 * group (b, g) is the P · C/G values x[b, p, g·C/G + j]; its mean and rstd are saved in `stats`
 * so the backward recomputes everything else from x.
 *
 * Reductions: the forward's statistics are exact two-pass (sum, then squared deviations from
 * the mean) inside chunks of {@link GN_CHUNK} values, combined across chunks as
 * Σ(M2_c + n_c (mean_c - mean)²); the backward reduces per (b, c) over pixel chunks, then over
 * chunks and channels. All in a fixed order (no atomics): same inputs, same bytes.
 * @module
 */
import {
  type Binding,
  ceilDiv,
  declareBindings,
  f32,
  type KernelSpec,
  linearWorkgroups,
} from "../kernel.ts";

/** The shape of one GroupNorm: x is [batch, pixels, channels], channels divisible by groups. */
export interface GroupNormShape {
  /** Batch size B. */
  batch: number;
  /** Pixels per example P (H · W). */
  pixels: number;
  /** Channels C. */
  channels: number;
  /** Groups G (C / G channels each). */
  groups: number;
}

/** The fused epilogue. */
export interface GroupNormOptions {
  /** Apply SiLU after the affine (and scale-shift). */
  silu?: boolean;
  /** Apply `(1 + ss[b, c]) · h + ss[b, C + c]` after the affine. */
  scaleShift?: boolean;
}

/** Values per workgroup of the forward statistics (256 threads x 4): a group up to this is one pass. */
export const GN_CHUNK = 1024;

const EPS = 1e-5;
const WG = 256;
const PER = GN_CHUNK / WG;
/** Pixels per thread in the backward's per-channel sums. */
const BACK_PIXELS_PER_THREAD = 16;

function check(s: GroupNormShape): void {
  const { batch, pixels, channels, groups } = s;
  for (const [k, v] of Object.entries(s)) {
    if (!(Number.isInteger(v) && v > 0)) throw new RangeError(`groupNorm: ${k} = ${v}`);
  }
  if (channels % groups !== 0) {
    throw new RangeError(`groupNorm: ${channels} channels in ${groups} groups`);
  }
  if (batch * pixels * channels >= 2 ** 32) throw new RangeError("groupNorm: too large");
}

function rw(name: string, length: number): Binding {
  return { name, access: "read_write", length };
}

function ro(name: string, length: number): Binding {
  return { name, access: "read", length };
}

/** WGSL of the index of the workgroup in a folded grid. */
function groupIndex(workgroups: [number, number, number]): string {
  return `wid.x + wid.y * ${workgroups[0]}u`;
}

/** The WGSL of u -> act(u) and of the shared constants and the tree sum over 256 threads. */
function prelude(s: GroupNormShape, options: GroupNormOptions): string {
  const { batch, pixels, channels, groups } = s;
  const cg = channels / groups;
  return `
const B = ${batch}u;
const P = ${pixels}u;
const C = ${channels}u;
const G = ${groups}u;
const CG = ${cg}u;
const N = ${pixels * cg}u;
const INV_N = ${f32(1 / (pixels * cg))};

fn act(u: f32) -> f32 {
  ${options.silu ? "return u / (1.0 + exp(-u));" : "return u;"}
}

// d act(u) / du
fn actGrad(u: f32) -> f32 {
  ${
    options.silu
      ? "let sg = 1.0 / (1.0 + exp(-u));\n  return sg * (1.0 + u * (1.0 - sg));"
      : "return 1.0;"
  }
}

var<workgroup> red: array<f32, ${WG}>;

// Sum of v over the workgroup's ${WG} threads, in a fixed tree order (call from uniform flow).
fn treeSum(t: u32, v: f32) -> f32 {
  red[t] = v;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s = s >> 1u) {
    if (t < s) { red[t] = red[t] + red[t + s]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}
`;
}

/** WGSL of xhat of element `idx` = (b, p, c) from `x` and `stats`. */
const XHAT = `
fn xhatOf(idx: u32) -> f32 {
  let c = idx % C;
  let b = idx / (P * C);
  let sg = (b * G + c / CG) * 2u;
  return (x[idx] - stats[sg]) * stats[sg + 1u];
}
`;

/** WGSL of the pre-activation u of element `idx` from its xhat, `gamma`, `beta` (and `ss`). */
function preActivation(options: GroupNormOptions): string {
  const ss = options.scaleShift
    ? "\n  h = h * (1.0 + ss[b * 2u * C + c]) + ss[b * 2u * C + C + c];"
    : "";
  return `
fn preAct(idx: u32, xh: f32) -> f32 {
  let c = idx % C;
  let b = idx / (P * C);
  var h = xh * gamma[c] + beta[c];${ss}
  return h;
}
`;
}

/**
 * The forward: bindings `x` [B·P·C], `gamma` [C], `beta` [C], `ss` [B·2C] (only with
 * `scaleShift`), `y` [B·P·C] (written), `stats` [B·G·2] (written: mean, rstd per (b, group)).
 *
 * A group of at most {@link GN_CHUNK} values is one pass (one workgroup per (b, group) computes
 * its statistics and writes y). A larger group is three passes sharing the scratch `tmp`
 * [B·G·ceil(N / GN_CHUNK)·2] (N = P·C/G): per-chunk (mean, M2), their combination into
 * `stats`, then y elementwise.
 */
export function groupNormForward(
  s: GroupNormShape,
  options: GroupNormOptions = {},
): KernelSpec | KernelSpec[] {
  check(s);
  const { batch, pixels, channels, groups } = s;
  const n = pixels * channels / groups;
  const total = batch * pixels * channels;
  const bg = batch * groups;
  const chunks = ceilDiv(n, GN_CHUNK);
  const x = ro("x", total);
  const affine = [ro("gamma", channels), ro("beta", channels)];
  const ss = options.scaleShift ? [ro("ss", batch * 2 * channels)] : [];
  const y = rw("y", total);
  const stats = rw("stats", bg * 2);
  const head = prelude(s, options) + XHAT + preActivation(options);
  const elementOf = `
fn elementOf(g: u32, i: u32) -> u32 {
  let b = g / G;
  return (b * P + i / CG) * C + (g % G) * CG + i % CG;
}`;

  if (chunks === 1) {
    const bindings = [x, ...affine, ...ss, y, stats];
    const workgroups = linearWorkgroups(bg, 1);
    return {
      name: "groupNorm.forward",
      bindings,
      workgroups,
      code: `${declareBindings(bindings)}
${head}
${elementOf}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let g = ${groupIndex(workgroups)};
  if (g >= ${bg}u) { return; }
  var xv: array<f32, ${PER}>;
  var sum = 0.0;
  for (var k = 0u; k < ${PER}u; k++) {
    let i = t + k * ${WG}u;
    if (i < N) { xv[k] = x[elementOf(g, i)]; sum += xv[k]; }
  }
  let mean = treeSum(t, sum) * INV_N;
  var sq = 0.0;
  for (var k = 0u; k < ${PER}u; k++) {
    let i = t + k * ${WG}u;
    if (i < N) { let d = xv[k] - mean; sq += d * d; }
  }
  let rstd = inverseSqrt(treeSum(t, sq) * INV_N + ${f32(EPS)});
  if (t == 0u) { stats[g * 2u] = mean; stats[g * 2u + 1u] = rstd; }
  for (var k = 0u; k < ${PER}u; k++) {
    let i = t + k * ${WG}u;
    if (i < N) {
      let idx = elementOf(g, i);
      y[idx] = act(preAct(idx, (xv[k] - mean) * rstd));
    }
  }
}`,
    };
  }

  const tmp = rw("tmp", bg * chunks * 2);
  const partGroups = linearWorkgroups(bg * chunks, 1);
  const partial: KernelSpec = {
    name: "groupNorm.forward.partial",
    bindings: [x, tmp],
    workgroups: partGroups,
    code: `${declareBindings([x, tmp])}
${prelude(s, options)}
${elementOf}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let w = ${groupIndex(partGroups)};
  if (w >= ${bg * chunks}u) { return; }
  let g = w / ${chunks}u;
  let start = (w % ${chunks}u) * ${GN_CHUNK}u;
  let count = min(${GN_CHUNK}u, N - start);
  var xv: array<f32, ${PER}>;
  var sum = 0.0;
  for (var k = 0u; k < ${PER}u; k++) {
    let i = t + k * ${WG}u;
    if (i < count) { xv[k] = x[elementOf(g, start + i)]; sum += xv[k]; }
  }
  let mean = treeSum(t, sum) / f32(count);
  var sq = 0.0;
  for (var k = 0u; k < ${PER}u; k++) {
    let i = t + k * ${WG}u;
    if (i < count) { let d = xv[k] - mean; sq += d * d; }
  }
  let m2 = treeSum(t, sq);
  if (t == 0u) { tmp[w * 2u] = mean; tmp[w * 2u + 1u] = m2; }
}`,
  };

  const finGroups = linearWorkgroups(bg, 1);
  const finalize: KernelSpec = {
    name: "groupNorm.forward.stats",
    bindings: [tmp, stats],
    workgroups: finGroups,
    code: `${declareBindings([tmp, stats])}
${prelude(s, options)}

fn countOf(c: u32) -> f32 {
  return f32(min(${GN_CHUNK}u, N - c * ${GN_CHUNK}u));
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let g = ${groupIndex(finGroups)};
  if (g >= ${bg}u) { return; }
  let base = g * ${chunks}u;
  var sum = 0.0;
  for (var c = t; c < ${chunks}u; c += ${WG}u) { sum += countOf(c) * tmp[(base + c) * 2u]; }
  let mean = treeSum(t, sum) * INV_N;
  var m2 = 0.0;
  for (var c = t; c < ${chunks}u; c += ${WG}u) {
    let d = tmp[(base + c) * 2u] - mean;
    m2 += tmp[(base + c) * 2u + 1u] + countOf(c) * d * d;
  }
  let rstd = inverseSqrt(treeSum(t, m2) * INV_N + ${f32(EPS)});
  if (t == 0u) { stats[g * 2u] = mean; stats[g * 2u + 1u] = rstd; }
}`,
  };

  const applyBindings = [x, ...affine, ...ss, y, { ...stats, access: "read" as const }];
  const applyGroups = linearWorkgroups(total, WG);
  const apply: KernelSpec = {
    name: "groupNorm.forward.apply",
    bindings: applyBindings,
    workgroups: applyGroups,
    code: `${declareBindings(applyBindings)}
${head}

@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let idx = gid.x + gid.y * ${applyGroups[0] * WG}u;
  if (idx >= ${total}u) { return; }
  y[idx] = act(preAct(idx, xhatOf(idx)));
}`,
  };
  return [partial, finalize, apply];
}

/** Options of the backward. */
export interface GroupNormBackwardOptions extends GroupNormOptions {
  /** `dx += ...` instead of `dx = ...` (dgamma, dbeta, dss are always written). */
  accumulate?: boolean;
}

/** Layout of the backward's scratch `tmp`. */
function backwardLayout(s: GroupNormShape): {
  lanes: number;
  tile: number;
  chunkPixels: number;
  pixelChunks: number;
  colBase: number;
  grpBase: number;
  length: number;
} {
  const { batch, pixels, channels, groups } = s;
  const tile = Math.min(channels, 64);
  const lanes = Math.floor(WG / tile);
  const chunkPixels = lanes * BACK_PIXELS_PER_THREAD;
  const pixelChunks = ceilDiv(pixels, chunkPixels);
  const colBase = batch * pixelChunks * channels * 2;
  const grpBase = colBase + batch * channels * 2;
  return {
    lanes,
    tile,
    chunkPixels,
    pixelChunks,
    colBase,
    grpBase,
    length: grpBase + batch * groups * 2,
  };
}

/** Length of the backward's scratch `tmp` (f32 values) for shape `s`. */
export function groupNormBackwardScratch(s: GroupNormShape): number {
  return backwardLayout(s).length;
}

/**
 * The backward, three passes sharing the scratch `tmp` (length
 * {@link groupNormBackwardScratch}): per (b, c, pixel chunk) the sums of du and du · xhat
 * (du = dy · act'(u), u the recomputed pre-activation); per (b, group) the chunks' totals
 * (writing `dss`) and the group means of dxhat and dxhat · xhat; then dx elementwise, the first
 * C threads also summing `dgamma`, `dbeta` over the batch.
 *
 * Bindings: `dy`, `x` [B·P·C], `gamma`, `beta` [C], `ss` [B·2C] (with `scaleShift`), `stats`
 * [B·G·2] (the forward's), `dx` [B·P·C] (written, or added to with `accumulate`), `dgamma`,
 * `dbeta` [C] (written), `dss` [B·2C] (written, with `scaleShift`: d scale then d shift).
 */
export function groupNormBackward(
  s: GroupNormShape,
  options: GroupNormBackwardOptions = {},
): KernelSpec[] {
  check(s);
  const { batch, pixels, channels, groups } = s;
  const total = batch * pixels * channels;
  const L = backwardLayout(s);
  const dy = ro("dy", total);
  const x = ro("x", total);
  const gamma = ro("gamma", channels);
  const beta = ro("beta", channels);
  const ss = options.scaleShift ? [ro("ss", batch * 2 * channels)] : [];
  const stats = ro("stats", batch * groups * 2);
  const tmp = rw("tmp", L.length);
  // Every binding must be used (auto layouts drop unused ones): u only matters with SiLU.
  const affineU = options.silu ? [gamma, beta, ...ss] : [];
  const head = prelude(s, options) + XHAT + (options.silu ? preActivation(options) : "");
  const scaleOf = options.scaleShift ? "(1.0 + ss[b * 2u * C + c])" : "1.0";
  const duOf = options.silu ? "dy[idx] * actGrad(preAct(idx, xh))" : "dy[idx]";

  const ctiles = ceilDiv(channels, L.tile);
  const sumsCount = batch * L.pixelChunks * ctiles;
  const sumsGroups = linearWorkgroups(sumsCount, 1);
  const sumsBindings = [dy, x, ...affineU, stats, tmp];
  const sums: KernelSpec = {
    name: "groupNorm.backward.sums",
    bindings: sumsBindings,
    workgroups: sumsGroups,
    code: `${declareBindings(sumsBindings)}
${head}

var<workgroup> red2: array<f32, ${WG}>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let w = ${groupIndex(sumsGroups)};
  if (w >= ${sumsCount}u) { return; }
  let ct = w % ${ctiles}u;
  let pc = (w / ${ctiles}u) % ${L.pixelChunks}u;
  let b = w / ${ctiles * L.pixelChunks}u;
  let tc = t % ${L.tile}u;
  let lane = t / ${L.tile}u;
  let c = ct * ${L.tile}u + tc;
  var s1 = 0.0;
  var s2 = 0.0;
  if (lane < ${L.lanes}u && c < C) {
    for (var k = 0u; k < ${BACK_PIXELS_PER_THREAD}u; k++) {
      let p = pc * ${L.chunkPixels}u + lane + k * ${L.lanes}u;
      if (p < P) {
        let idx = (b * P + p) * C + c;
        let xh = xhatOf(idx);
        let du = ${duOf};
        s1 += du;
        s2 += du * xh;
      }
    }
  }
  red[t] = s1;
  red2[t] = s2;
  workgroupBarrier();
  if (lane == 0u && c < C) {
    var a1 = 0.0;
    var a2 = 0.0;
    for (var l = 0u; l < ${L.lanes}u; l++) {
      a1 += red[l * ${L.tile}u + tc];
      a2 += red2[l * ${L.tile}u + tc];
    }
    let o = ((b * ${L.pixelChunks}u + pc) * C + c) * 2u;
    tmp[o] = a1;
    tmp[o + 1u] = a2;
  }
}`,
  };

  const dssBinding = options.scaleShift ? [rw("dss", batch * 2 * channels)] : [];
  const grpCount = batch * groups;
  const grpGroups = linearWorkgroups(grpCount, 1);
  const grpBindings = [gamma, ...(options.scaleShift ? [beta, ...ss] : []), tmp, ...dssBinding];
  const dssWrite = options.scaleShift
    ? `dss[b * 2u * C + c] = gamma[c] * s2 + beta[c] * s1;
      dss[b * 2u * C + C + c] = s1;`
    : "";
  const grp: KernelSpec = {
    name: "groupNorm.backward.groups",
    bindings: grpBindings,
    workgroups: grpGroups,
    code: `${declareBindings(grpBindings)}
${prelude(s, options)}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let w = ${groupIndex(grpGroups)};
  if (w >= ${grpCount}u) { return; }
  let b = w / G;
  let g = w % G;
  var a1 = 0.0;
  var a2 = 0.0;
  for (var j = t; j < CG; j += ${WG}u) {
    let c = g * CG + j;
    var s1 = 0.0;
    var s2 = 0.0;
    for (var pc = 0u; pc < ${L.pixelChunks}u; pc++) {
      let o = ((b * ${L.pixelChunks}u + pc) * C + c) * 2u;
      s1 += tmp[o];
      s2 += tmp[o + 1u];
    }
    ${dssWrite}
    let sc = ${scaleOf};
    let o = ${L.colBase}u + (b * C + c) * 2u;
    tmp[o] = sc * s1;
    tmp[o + 1u] = sc * s2;
    a1 += gamma[c] * sc * s1;
    a2 += gamma[c] * sc * s2;
  }
  let m1 = treeSum(t, a1) * INV_N;
  let m2 = treeSum(t, a2) * INV_N;
  if (t == 0u) {
    tmp[${L.grpBase}u + w * 2u] = m1;
    tmp[${L.grpBase}u + w * 2u + 1u] = m2;
  }
}`,
  };

  const dx = rw("dx", total);
  const dgamma = rw("dgamma", channels);
  const dbeta = rw("dbeta", channels);
  const dxAffine = options.silu ? affineU : [gamma, ...ss];
  const dxBindings = [dy, x, ...dxAffine, stats, tmp, dx, dgamma, dbeta];
  const dxGroups = linearWorkgroups(total, WG);
  const dxPass: KernelSpec = {
    name: "groupNorm.backward.dx",
    bindings: dxBindings,
    workgroups: dxGroups,
    code: `${declareBindings(dxBindings)}
${head}

@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let idx = gid.x + gid.y * ${dxGroups[0] * WG}u;
  if (idx >= ${total}u) { return; }
  if (idx < C) {
    var sb = 0.0;
    var sg = 0.0;
    for (var bb = 0u; bb < B; bb++) {
      let o = ${L.colBase}u + (bb * C + idx) * 2u;
      sb += tmp[o];
      sg += tmp[o + 1u];
    }
    dbeta[idx] = sb;
    dgamma[idx] = sg;
  }
  let c = idx % C;
  let b = idx / (P * C);
  let w = b * G + c / CG;
  let xh = xhatOf(idx);
  let du = ${duOf};
  let dxh = du * ${scaleOf} * gamma[c];
  let v = stats[w * 2u + 1u] *
    (dxh - tmp[${L.grpBase}u + w * 2u] - xh * tmp[${L.grpBase}u + w * 2u + 1u]);
  dx[idx] = ${options.accumulate ? "dx[idx] + v" : "v"};
}`,
  };
  return [sums, grp, dxPass];
}

/** Inputs of the references (any numeric arrays: Float32Array, Float64Array, number[]). */
export interface GroupNormInputs {
  /** [B·P·C]. */
  x: ArrayLike<number>;
  /** [C]. */
  gamma: ArrayLike<number>;
  /** [C]. */
  beta: ArrayLike<number>;
  /** [B·2C] (scale then shift), with `scaleShift`. */
  ss?: ArrayLike<number>;
}

function sigmoid(u: number): number {
  return 1 / (1 + Math.exp(-u));
}

function refStats(x: ArrayLike<number>, s: GroupNormShape): Float64Array {
  const { batch, pixels, channels, groups } = s;
  const cg = channels / groups;
  const n = pixels * cg;
  const stats = new Float64Array(batch * groups * 2);
  for (let b = 0; b < batch; b++) {
    for (let g = 0; g < groups; g++) {
      let sum = 0;
      for (let p = 0; p < pixels; p++) {
        for (let j = 0; j < cg; j++) sum += x[(b * pixels + p) * channels + g * cg + j];
      }
      const mean = sum / n;
      let sq = 0;
      for (let p = 0; p < pixels; p++) {
        for (let j = 0; j < cg; j++) {
          const d = x[(b * pixels + p) * channels + g * cg + j] - mean;
          sq += d * d;
        }
      }
      stats[(b * groups + g) * 2] = mean;
      stats[(b * groups + g) * 2 + 1] = 1 / Math.sqrt(sq / n + EPS);
    }
  }
  return stats;
}

/** The forward in float64: y [B·P·C] and stats [B·G·2] (mean, rstd), as the kernel writes. */
export function groupNormForwardRef(
  inputs: GroupNormInputs,
  s: GroupNormShape,
  options: GroupNormOptions = {},
): { y: Float64Array; stats: Float64Array } {
  const { x, gamma, beta, ss } = inputs;
  const { pixels, channels, groups } = s;
  const cg = channels / groups;
  const stats = refStats(x, s);
  const y = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const c = i % channels;
    const b = Math.floor(i / (pixels * channels));
    const w = b * groups + Math.floor(c / cg);
    let u = (x[i] - stats[w * 2]) * stats[w * 2 + 1] * gamma[c] + beta[c];
    if (options.scaleShift) {
      u = u * (1 + ss![b * 2 * channels + c]) + ss![(b * 2 + 1) * channels + c];
    }
    y[i] = options.silu ? u * sigmoid(u) : u;
  }
  return { y, stats };
}

/**
 * The backward in float64 (gradients of Σ dy · y): dx, dgamma, dbeta and, with `scaleShift`,
 * dss (d scale [B, C] then d shift [B, C] per example, as the kernel's `dss`).
 */
export function groupNormBackwardRef(
  inputs: GroupNormInputs & { dy: ArrayLike<number> },
  s: GroupNormShape,
  options: GroupNormOptions = {},
): { dx: Float64Array; dgamma: Float64Array; dbeta: Float64Array; dss?: Float64Array } {
  const { x, gamma, beta, ss, dy } = inputs;
  const { batch, pixels, channels, groups } = s;
  const cg = channels / groups;
  const n = pixels * cg;
  const stats = refStats(x, s);
  const dx = new Float64Array(x.length);
  const dgamma = new Float64Array(channels);
  const dbeta = new Float64Array(channels);
  const dss = options.scaleShift ? new Float64Array(batch * 2 * channels) : undefined;
  const dxhat = new Float64Array(x.length);
  const xhat = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const c = i % channels;
    const b = Math.floor(i / (pixels * channels));
    const w = b * groups + Math.floor(c / cg);
    xhat[i] = (x[i] - stats[w * 2]) * stats[w * 2 + 1];
    const h = xhat[i] * gamma[c] + beta[c];
    const scale = options.scaleShift ? ss![b * 2 * channels + c] : 0;
    const u = options.scaleShift ? h * (1 + scale) + ss![(b * 2 + 1) * channels + c] : h;
    const sg = sigmoid(u);
    const du = options.silu ? dy[i] * sg * (1 + u * (1 - sg)) : dy[i];
    if (dss) {
      dss[b * 2 * channels + c] += du * h;
      dss[(b * 2 + 1) * channels + c] += du;
    }
    const dh = du * (1 + scale);
    dgamma[c] += dh * xhat[i];
    dbeta[c] += dh;
    dxhat[i] = dh * gamma[c];
  }
  for (let b = 0; b < batch; b++) {
    for (let g = 0; g < groups; g++) {
      const at = (p: number, j: number) => (b * pixels + p) * channels + g * cg + j;
      let m1 = 0;
      let m2 = 0;
      for (let p = 0; p < pixels; p++) {
        for (let j = 0; j < cg; j++) {
          m1 += dxhat[at(p, j)];
          m2 += dxhat[at(p, j)] * xhat[at(p, j)];
        }
      }
      m1 /= n;
      m2 /= n;
      const rstd = stats[(b * groups + g) * 2 + 1];
      for (let p = 0; p < pixels; p++) {
        for (let j = 0; j < cg; j++) {
          const i = at(p, j);
          dx[i] = rstd * (dxhat[i] - m1 - xhat[i] * m2);
        }
      }
    }
  }
  return dss ? { dx, dgamma, dbeta, dss } : { dx, dgamma, dbeta };
}
