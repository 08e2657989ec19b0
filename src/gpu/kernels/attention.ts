/**
 * The U-Net's three attention kinds, between their input projection and `to_out`:
 *
 * - linear attention (layers.ts `linearAttention`): q softmaxed over each head's channels and
 *   scaled by dimHead^-0.5, k softmaxed over the positions, context = k vᵀ per head,
 *   out = q · context;
 * - full softmax attention (layers.ts `attention`): out = softmax(q kᵀ / √dimHead) v per head,
 *   flash-attention style (the n x n scores are never stored; the backward recomputes them from
 *   the saved log-sum-exp);
 * - cross-attention (conditioning.ts `CrossAttention`): the same with k, v from the label
 *   tokens.
 *
 * Layouts: `qkv` is the to_qkv 1x1 conv's output [B, n, 3·hidden], channel
 * part·hidden + head·dimHead + d (part 0 q, 1 k, 2 v); merged outputs (and cross-attention's q,
 * k, v) are [B, rows, hidden], channel head·dimHead + d. Per-row statistics (`lse`) are
 * [B, heads, n]: index (b·heads + head)·n + i.
 *
 * Every reduction runs in a fixed order (per-thread loops, chunk partials through `tmp`
 * combined in chunk order), no atomics: same inputs, same bytes.
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

/** The shape of one attention: `pixels` = n = H · W positions, hidden = heads · dimHead. */
export interface AttentionShape {
  /** Batch size B. */
  batch: number;
  /** Positions n (H · W). */
  pixels: number;
  /** Heads. */
  heads: number;
  /** Channels per head. */
  dimHead: number;
}

/** Cross-attention's shape: the image positions attend to `tokens` label tokens. */
export interface CrossAttentionShape extends AttentionShape {
  /** Label tokens per example. */
  tokens: number;
}

/** Options of the backward kernels. */
export interface AttentionBackwardOptions {
  /** Add to `dqkv` (cross-attention: `dq`) instead of writing it. */
  accumulate?: boolean;
}

const WG = 256;

function check(s: AttentionShape | CrossAttentionShape): void {
  for (const [k, v] of Object.entries(s)) {
    if (!(Number.isInteger(v) && v > 0)) throw new RangeError(`attention: ${k} = ${v}`);
  }
  if (s.batch * s.pixels * 3 * s.heads * s.dimHead >= 2 ** 32) {
    throw new RangeError("attention: too large");
  }
}

function rw(name: string, length: number): Binding {
  return { name, access: "read_write", length };
}

function ro(name: string, length: number): Binding {
  return { name, access: "read", length };
}

function constants(s: AttentionShape): string {
  const hidden = s.heads * s.dimHead;
  return `
const B = ${s.batch}u;
const N = ${s.pixels}u;
const H = ${s.heads}u;
const D = ${s.dimHead}u;
const HID = ${hidden}u;
const QKV = ${3 * hidden}u;
const SCALE = ${f32(s.dimHead ** -0.5)};
`;
}

function store(name: string, at: string, v: string, accumulate: boolean | undefined): string {
  return accumulate ? `${name}[${at}] = ${name}[${at}] + ${v};` : `${name}[${at}] = ${v};`;
}

// ---------------------------------------------------------------------------------------------
// Linear attention

/** Positions per chunk of the linear attention's context partials. */
function linearChunk(s: AttentionShape): number {
  let nc = 64;
  while (nc > 1 && nc * s.dimHead > 1024) nc /= 2;
  return Math.min(nc, s.pixels);
}

/** Scratch lengths of the linear attention's passes. */
export function linearAttentionScratch(
  s: AttentionShape,
): { forward: number; backward: number; chunks: number } {
  const chunks = ceilDiv(s.pixels, linearChunk(s));
  const bh = s.batch * s.heads;
  const dd = s.dimHead * s.dimHead;
  return {
    chunks,
    forward: bh * chunks * (dd + 2 * s.dimHead),
    backward: bh * chunks * dd + bh * dd,
  };
}

/**
 * Linear attention's forward, three passes: per (b, head, chunk of positions) the chunk's
 * k-softmax max and sum and unnormalised context (into `tmp`), their combination into
 * `context` and `kstats`, then `out` elementwise.
 *
 * Bindings: `qkv` [B·n·3·hidden], `out` [B·n·hidden] (written), `context`
 * [B·heads·dimHead·dimHead] (written, saved for the backward: context[(b·heads + h)·D² + d·D + e]
 * = Σ_n softmax_n(k)[d, n] v[n, e]), `kstats` [B·heads·dimHead·2] (written, saved: max and
 * Σ exp(k - max) over the positions of each k channel), `tmp` (scratch,
 * {@link linearAttentionScratch}`.forward`).
 */
export function linearAttentionForward(s: AttentionShape): KernelSpec[] {
  check(s);
  const { batch, pixels, heads, dimHead: D } = s;
  const hidden = heads * D;
  const bh = batch * heads;
  const nc = linearChunk(s);
  const { chunks, forward: tmpLength } = linearAttentionScratch(s);
  const stride = D * D + 2 * D;
  const qkv = ro("qkv", batch * pixels * 3 * hidden);
  const tmp = rw("tmp", tmpLength);
  const context = rw("context", bh * D * D);
  const kstats = rw("kstats", bh * D * 2);
  const out = rw("out", batch * pixels * hidden);

  const partGroups = linearWorkgroups(bh * chunks, 1);
  const partial: KernelSpec = {
    name: "linearAttention.forward.partial",
    bindings: [qkv, tmp],
    workgroups: partGroups,
    code: `${declareBindings([qkv, tmp])}
${constants(s)}
var<workgroup> ks: array<f32, ${nc * D}>;
var<workgroup> vs: array<f32, ${nc * D}>;
var<workgroup> mx: array<f32, ${D}>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let w = wid.x + wid.y * ${partGroups[0]}u;
  if (w >= ${bh * chunks}u) { return; }
  let chunk = w % ${chunks}u;
  let b = w / ${chunks * heads}u;
  let h = (w / ${chunks}u) % H;
  let start = chunk * ${nc}u;
  let count = min(${nc}u, N - start);
  for (var i = t; i < count * D; i += ${WG}u) {
    let row = (b * N + start + i / D) * QKV + h * D + i % D;
    ks[i] = qkv[row + HID];
    vs[i] = qkv[row + 2u * HID];
  }
  workgroupBarrier();
  for (var d = t; d < D; d += ${WG}u) {
    var m = ks[d];
    for (var p = 1u; p < count; p++) { m = max(m, ks[p * D + d]); }
    mx[d] = m;
  }
  workgroupBarrier();
  for (var i = t; i < count * D; i += ${WG}u) { ks[i] = exp(ks[i] - mx[i % D]); }
  workgroupBarrier();
  let base = w * ${stride}u;
  for (var d = t; d < D; d += ${WG}u) {
    var sum = 0.0;
    for (var p = 0u; p < count; p++) { sum += ks[p * D + d]; }
    tmp[base + D * D + d] = mx[d];
    tmp[base + D * D + D + d] = sum;
  }
  for (var o = t; o < D * D; o += ${WG}u) {
    let d = o / D;
    let e = o % D;
    var acc = 0.0;
    for (var p = 0u; p < count; p++) { acc += ks[p * D + d] * vs[p * D + e]; }
    tmp[base + o] = acc;
  }
}`,
  };

  const combineCount = bh * D * D;
  const combineGroups = linearWorkgroups(combineCount, WG);
  const combine: KernelSpec = {
    name: "linearAttention.forward.context",
    bindings: [tmp, context, kstats],
    workgroups: combineGroups,
    code: `${declareBindings([tmp, context, kstats])}
${constants(s)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let o = gid.x + gid.y * ${combineGroups[0] * WG}u;
  if (o >= ${combineCount}u) { return; }
  let de = o % (D * D);
  let g = o / (D * D);
  let d = de / D;
  let first = g * ${chunks}u;
  var m = tmp[first * ${stride}u + D * D + d];
  for (var c = 1u; c < ${chunks}u; c++) { m = max(m, tmp[(first + c) * ${stride}u + D * D + d]); }
  var sum = 0.0;
  var acc = 0.0;
  for (var c = 0u; c < ${chunks}u; c++) {
    let base = (first + c) * ${stride}u;
    let f = exp(tmp[base + D * D + d] - m);
    sum += tmp[base + D * D + D + d] * f;
    acc += tmp[base + de] * f;
  }
  context[o] = acc / sum;
  if (de % D == 0u) {
    kstats[(g * D + d) * 2u] = m;
    kstats[(g * D + d) * 2u + 1u] = sum;
  }
}`,
  };

  const outCount = batch * pixels * hidden;
  const outGroups = linearWorkgroups(outCount, WG);
  const outBindings = [qkv, { ...context, access: "read" as const }, out];
  const outPass: KernelSpec = {
    name: "linearAttention.forward.out",
    bindings: outBindings,
    workgroups: outGroups,
    code: `${declareBindings(outBindings)}
${constants(s)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let o = gid.x + gid.y * ${outGroups[0] * WG}u;
  if (o >= ${outCount}u) { return; }
  let c = o % HID;
  let pos = o / HID;
  let h = c / D;
  let e = c % D;
  let b = pos / N;
  let row = pos * QKV + h * D;
  var m = qkv[row];
  for (var d = 1u; d < D; d++) { m = max(m, qkv[row + d]); }
  var sum = 0.0;
  var acc = 0.0;
  let ctx = (b * H + h) * D * D + e;
  for (var d = 0u; d < D; d++) {
    let p = exp(qkv[row + d] - m);
    sum += p;
    acc += p * context[ctx + d * D];
  }
  out[o] = acc * (SCALE / sum);
}`,
  };
  return [partial, combine, outPass];
}

/**
 * Linear attention's backward, three passes: per (b, head, chunk) the chunk's part of
 * dcontext = Σ_n q̃[n, d] dout[n, e] (q̃ the scaled q softmax), their sum (both in `tmp`,
 * {@link linearAttentionScratch}`.backward`), then dq, dk, dv per (b, head, tile of
 * positions).
 *
 * Bindings: `dout` [B·n·hidden], `qkv`, `context`, `kstats` (the forward's), `tmp`, `dqkv`
 * [B·n·3·hidden] (written, or added to with `accumulate`).
 */
export function linearAttentionBackward(
  s: AttentionShape,
  options: AttentionBackwardOptions = {},
): KernelSpec[] {
  check(s);
  const { batch, pixels, heads, dimHead: D } = s;
  const hidden = heads * D;
  const bh = batch * heads;
  const nc = linearChunk(s);
  const { chunks, backward: tmpLength } = linearAttentionScratch(s);
  const dctxBase = bh * chunks * D * D;
  const dout = ro("dout", batch * pixels * hidden);
  const qkv = ro("qkv", batch * pixels * 3 * hidden);
  const context = ro("context", bh * D * D);
  const kstats = ro("kstats", bh * D * 2);
  const tmp = rw("tmp", tmpLength);
  const dqkv = rw("dqkv", batch * pixels * 3 * hidden);

  const partGroups = linearWorkgroups(bh * chunks, 1);
  const partBindings = [dout, qkv, tmp];
  const partial: KernelSpec = {
    name: "linearAttention.backward.partial",
    bindings: partBindings,
    workgroups: partGroups,
    code: `${declareBindings(partBindings)}
${constants(s)}
var<workgroup> qs: array<f32, ${nc * D}>;
var<workgroup> ds: array<f32, ${nc * D}>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let w = wid.x + wid.y * ${partGroups[0]}u;
  if (w >= ${bh * chunks}u) { return; }
  let chunk = w % ${chunks}u;
  let b = w / ${chunks * heads}u;
  let h = (w / ${chunks}u) % H;
  let start = chunk * ${nc}u;
  let count = min(${nc}u, N - start);
  for (var i = t; i < count * D; i += ${WG}u) {
    let pos = b * N + start + i / D;
    qs[i] = qkv[pos * QKV + h * D + i % D];
    ds[i] = dout[pos * HID + h * D + i % D];
  }
  workgroupBarrier();
  for (var p = t; p < count; p += ${WG}u) {
    var m = qs[p * D];
    for (var d = 1u; d < D; d++) { m = max(m, qs[p * D + d]); }
    var sum = 0.0;
    for (var d = 0u; d < D; d++) {
      let e = exp(qs[p * D + d] - m);
      qs[p * D + d] = e;
      sum += e;
    }
    let f = SCALE / sum;
    for (var d = 0u; d < D; d++) { qs[p * D + d] = qs[p * D + d] * f; }
  }
  workgroupBarrier();
  for (var o = t; o < D * D; o += ${WG}u) {
    let d = o / D;
    let e = o % D;
    var acc = 0.0;
    for (var p = 0u; p < count; p++) { acc += qs[p * D + d] * ds[p * D + e]; }
    tmp[w * D * D + o] = acc;
  }
}`,
  };

  const combineCount = bh * D * D;
  const combineGroups = linearWorkgroups(combineCount, WG);
  const combine: KernelSpec = {
    name: "linearAttention.backward.dcontext",
    bindings: [tmp],
    workgroups: combineGroups,
    code: `${declareBindings([tmp])}
${constants(s)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let o = gid.x + gid.y * ${combineGroups[0] * WG}u;
  if (o >= ${combineCount}u) { return; }
  let de = o % (D * D);
  let g = o / (D * D);
  var acc = 0.0;
  for (var c = 0u; c < ${chunks}u; c++) { acc += tmp[(g * ${chunks}u + c) * D * D + de]; }
  tmp[${dctxBase}u + o] = acc;
}`,
  };

  const tp = Math.max(1, Math.floor(WG / D));
  const tiles = ceilDiv(pixels, tp);
  const gradGroups = linearWorkgroups(bh * tiles, 1);
  const gradBindings = [dout, qkv, context, kstats, tmp, dqkv];
  const acc = options.accumulate;
  const grads: KernelSpec = {
    name: "linearAttention.backward.dqkv",
    bindings: gradBindings,
    workgroups: gradGroups,
    code: `${declareBindings(gradBindings)}
${constants(s)}
const TP = ${tp}u;
var<workgroup> qp: array<f32, ${tp * D}>;
var<workgroup> gs: array<f32, ${tp * D}>;
var<workgroup> kp: array<f32, ${tp * D}>;
var<workgroup> vs: array<f32, ${tp * D}>;
var<workgroup> ds: array<f32, ${tp * D}>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let w = wid.x + wid.y * ${gradGroups[0]}u;
  if (w >= ${bh * tiles}u) { return; }
  let g = w / ${tiles}u;
  let b = g / H;
  let h = g % H;
  let start = (w % ${tiles}u) * TP;
  let count = min(TP, N - start);
  let ctx = g * D * D;
  let dctx = ${dctxBase}u + g * D * D;
  for (var i = t; i < count * D; i += ${WG}u) {
    let pos = b * N + start + i / D;
    let d = i % D;
    let row = pos * QKV + h * D + d;
    qp[i] = qkv[row];
    let ksi = (g * D + d) * 2u;
    kp[i] = exp(qkv[row + HID] - kstats[ksi]) / kstats[ksi + 1u];
    vs[i] = qkv[row + 2u * HID];
    ds[i] = dout[pos * HID + h * D + d];
  }
  workgroupBarrier();
  for (var p = t; p < count; p += ${WG}u) {
    var m = qp[p * D];
    for (var d = 1u; d < D; d++) { m = max(m, qp[p * D + d]); }
    var sum = 0.0;
    for (var d = 0u; d < D; d++) {
      let e = exp(qp[p * D + d] - m);
      qp[p * D + d] = e;
      sum += e;
    }
    for (var d = 0u; d < D; d++) { qp[p * D + d] = qp[p * D + d] / sum; }
  }
  // g[p, d] = Σ_e dout[p, e] context[d, e]: the gradient of the scaled q softmax.
  for (var i = t; i < count * D; i += ${WG}u) {
    let p = i / D;
    let d = i % D;
    var a = 0.0;
    for (var e = 0u; e < D; e++) { a += ds[p * D + e] * context[ctx + d * D + e]; }
    gs[i] = a;
  }
  workgroupBarrier();
  for (var i = t; i < count * D; i += ${WG}u) {
    let p = i / D;
    let d = i % D;
    var pg = 0.0;
    for (var j = 0u; j < D; j++) { pg += qp[p * D + j] * gs[p * D + j]; }
    let dq = SCALE * qp[i] * (gs[i] - pg);
    var dks = 0.0;
    var r = 0.0;
    var dv = 0.0;
    for (var e = 0u; e < D; e++) {
      let dc = tmp[dctx + d * D + e];
      dks += dc * vs[p * D + e];
      r += dc * context[ctx + d * D + e];
      dv += kp[p * D + e] * tmp[dctx + e * D + d];
    }
    let dk = kp[i] * (dks - r);
    let row = (b * N + start + p) * QKV + h * D + d;
    ${store("dqkv", "row", "dq", acc)}
    ${store("dqkv", "row + HID", "dk", acc)}
    ${store("dqkv", "row + 2u * HID", "dv", acc)}
  }
}`,
  };
  return [partial, combine, grads];
}

// ---------------------------------------------------------------------------------------------
// Full softmax attention

/** Query (or key) rows per workgroup: one thread each. */
function rowTile(n: number): number {
  return Math.min(64, ceilDiv(n, 32) * 32);
}

/** Rows of the tiles staged in workgroup memory (K/V, or Q/dout). */
function stageTile(s: AttentionShape): number {
  return Math.max(1, Math.min(32, Math.floor(1024 / s.dimHead), s.pixels));
}

/** Length of full attention's backward scratch `tmp` (the rows' dout · out). */
export function attentionBackwardScratch(s: AttentionShape): number {
  return s.batch * s.heads * s.pixels;
}

/**
 * Full attention's forward, one pass: per (b, head, tile of queries), one thread per query
 * runs the online softmax over tiles of keys staged in workgroup memory, in key order.
 *
 * Bindings: `qkv` [B·n·3·hidden], `out` [B·n·hidden] (written), `lse` [B·heads·n] (written:
 * log Σ_j exp(q_i · k_j / √dimHead), saved for the backward).
 */
export function attentionForward(s: AttentionShape): KernelSpec {
  check(s);
  const { batch, pixels, heads, dimHead: D } = s;
  const hidden = heads * D;
  const tq = rowTile(pixels);
  const tk = stageTile(s);
  const qTiles = ceilDiv(pixels, tq);
  const kTiles = ceilDiv(pixels, tk);
  const count = batch * heads * qTiles;
  const workgroups = linearWorkgroups(count, 1);
  const bindings = [
    ro("qkv", batch * pixels * 3 * hidden),
    rw("out", batch * pixels * hidden),
    rw("lse", batch * heads * pixels),
  ];
  return {
    name: "attention.forward",
    bindings,
    workgroups,
    code: `${declareBindings(bindings)}
${constants(s)}
const TK = ${tk}u;
var<workgroup> ks: array<f32, ${tk * D}>;
var<workgroup> vs: array<f32, ${tk * D}>;

@compute @workgroup_size(${tq})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let w = wid.x + wid.y * ${workgroups[0]}u;
  if (w >= ${count}u) { return; }
  let g = w / ${qTiles}u;
  let b = g / H;
  let h = g % H;
  let qi = (w % ${qTiles}u) * ${tq}u + t;
  let valid = qi < N;
  var q: array<f32, ${D}>;
  var acc: array<f32, ${D}>;
  var sc: array<f32, ${tk}>;
  if (valid) {
    for (var d = 0u; d < D; d++) { q[d] = qkv[(b * N + qi) * QKV + h * D + d]; }
  }
  var m = -3.0e38;
  var l = 0.0;
  for (var kt = 0u; kt < ${kTiles}u; kt++) {
    workgroupBarrier();
    let start = kt * TK;
    let cnt = min(TK, N - start);
    for (var i = t; i < cnt * D; i += ${tq}u) {
      let row = (b * N + start + i / D) * QKV + h * D + i % D;
      ks[i] = qkv[row + HID];
      vs[i] = qkv[row + 2u * HID];
    }
    workgroupBarrier();
    if (valid) {
      var mt = m;
      for (var j = 0u; j < TK; j++) {
        if (j < cnt) {
          var a = 0.0;
          for (var d = 0u; d < D; d++) { a += q[d] * ks[j * D + d]; }
          sc[j] = a * SCALE;
          mt = max(mt, sc[j]);
        }
      }
      let corr = exp(m - mt);
      l = l * corr;
      for (var d = 0u; d < D; d++) { acc[d] = acc[d] * corr; }
      for (var j = 0u; j < TK; j++) {
        if (j < cnt) {
          let p = exp(sc[j] - mt);
          l += p;
          for (var d = 0u; d < D; d++) { acc[d] += p * vs[j * D + d]; }
        }
      }
      m = mt;
    }
  }
  if (valid) {
    let inv = 1.0 / l;
    for (var d = 0u; d < D; d++) { out[(b * N + qi) * HID + h * D + d] = acc[d] * inv; }
    lse[g * N + qi] = m + log(l);
  }
}`,
  };
}

/**
 * Full attention's backward (flash-attention 2 style, recomputing the probabilities from
 * `lse`), three passes: delta_i = dout_i · out_i into `tmp` ({@link attentionBackwardScratch});
 * dk, dv per (b, head, tile of keys) looping over all queries in order; dq per (b, head, tile
 * of queries) looping over all keys in order.
 *
 * Bindings: `dout` [B·n·hidden], `qkv`, `out`, `lse` (the forward's), `tmp`, `dqkv`
 * [B·n·3·hidden] (written, or added to with `accumulate`).
 */
export function attentionBackward(
  s: AttentionShape,
  options: AttentionBackwardOptions = {},
): KernelSpec[] {
  check(s);
  const { batch, pixels, heads, dimHead: D } = s;
  const hidden = heads * D;
  const bh = batch * heads;
  const dout = ro("dout", batch * pixels * hidden);
  const qkv = ro("qkv", batch * pixels * 3 * hidden);
  const out = ro("out", batch * pixels * hidden);
  const lse = ro("lse", bh * pixels);
  const tmp = rw("tmp", attentionBackwardScratch(s));
  const dqkv = rw("dqkv", batch * pixels * 3 * hidden);
  const acc = options.accumulate;

  const rows = bh * pixels;
  const deltaGroups = linearWorkgroups(rows, WG);
  const delta: KernelSpec = {
    name: "attention.backward.delta",
    bindings: [dout, out, tmp],
    workgroups: deltaGroups,
    code: `${declareBindings([dout, out, tmp])}
${constants(s)}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let r = gid.x + gid.y * ${deltaGroups[0] * WG}u;
  if (r >= ${rows}u) { return; }
  let g = r / N;
  let at = ((g / H) * N + r % N) * HID + (g % H) * D;
  var a = 0.0;
  for (var d = 0u; d < D; d++) { a += dout[at + d] * out[at + d]; }
  tmp[r] = a;
}`,
  };

  const tr = rowTile(pixels);
  const ts = stageTile(s);
  const rowTiles = ceilDiv(pixels, tr);
  const stageTiles = ceilDiv(pixels, ts);
  const count = bh * rowTiles;
  const workgroups = linearWorkgroups(count, 1);
  const header = (name: string) => `
@compute @workgroup_size(${tr})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let w = wid.x + wid.y * ${workgroups[0]}u;
  if (w >= ${count}u) { return; }
  let g = w / ${rowTiles}u;
  let b = g / H;
  let h = g % H;
  let ${name} = (w % ${rowTiles}u) * ${tr}u + t;
  let valid = ${name} < N;`;

  const kvBindings = [dout, qkv, lse, tmp, dqkv];
  const dkdv: KernelSpec = {
    name: "attention.backward.dkdv",
    bindings: kvBindings,
    workgroups,
    code: `${declareBindings(kvBindings)}
${constants(s)}
const TS = ${ts}u;
var<workgroup> qs: array<f32, ${ts * D}>;
var<workgroup> dos: array<f32, ${ts * D}>;
var<workgroup> ls: array<f32, ${ts}>;
var<workgroup> dl: array<f32, ${ts}>;
${header("kj")}
  var k: array<f32, ${D}>;
  var v: array<f32, ${D}>;
  var dk: array<f32, ${D}>;
  var dv: array<f32, ${D}>;
  if (valid) {
    for (var d = 0u; d < D; d++) {
      k[d] = qkv[(b * N + kj) * QKV + HID + h * D + d];
      v[d] = qkv[(b * N + kj) * QKV + 2u * HID + h * D + d];
    }
  }
  for (var qt = 0u; qt < ${stageTiles}u; qt++) {
    workgroupBarrier();
    let start = qt * TS;
    let cnt = min(TS, N - start);
    for (var i = t; i < cnt * D; i += ${tr}u) {
      let pos = b * N + start + i / D;
      qs[i] = qkv[pos * QKV + h * D + i % D];
      dos[i] = dout[pos * HID + h * D + i % D];
    }
    for (var i = t; i < cnt; i += ${tr}u) {
      ls[i] = lse[g * N + start + i];
      dl[i] = tmp[g * N + start + i];
    }
    workgroupBarrier();
    if (valid) {
      for (var i = 0u; i < TS; i++) {
        if (i < cnt) {
          var sc = 0.0;
          var dp = 0.0;
          for (var d = 0u; d < D; d++) {
            sc += qs[i * D + d] * k[d];
            dp += dos[i * D + d] * v[d];
          }
          let p = exp(sc * SCALE - ls[i]);
          let ds = p * (dp - dl[i]);
          for (var d = 0u; d < D; d++) {
            dv[d] += p * dos[i * D + d];
            dk[d] += ds * qs[i * D + d];
          }
        }
      }
    }
  }
  if (valid) {
    let row = (b * N + kj) * QKV + h * D;
    for (var d = 0u; d < D; d++) {
      ${store("dqkv", "row + HID + d", "dk[d] * SCALE", acc)}
      ${store("dqkv", "row + 2u * HID + d", "dv[d]", acc)}
    }
  }
}`,
  };

  const qBindings = [dout, qkv, lse, tmp, dqkv];
  const dq: KernelSpec = {
    name: "attention.backward.dq",
    bindings: qBindings,
    workgroups,
    code: `${declareBindings(qBindings)}
${constants(s)}
const TS = ${ts}u;
var<workgroup> ks: array<f32, ${ts * D}>;
var<workgroup> vs: array<f32, ${ts * D}>;
${header("qi")}
  var q: array<f32, ${D}>;
  var dov: array<f32, ${D}>;
  var dq: array<f32, ${D}>;
  var l = 0.0;
  var dl = 0.0;
  if (valid) {
    for (var d = 0u; d < D; d++) {
      q[d] = qkv[(b * N + qi) * QKV + h * D + d];
      dov[d] = dout[(b * N + qi) * HID + h * D + d];
    }
    l = lse[g * N + qi];
    dl = tmp[g * N + qi];
  }
  for (var kt = 0u; kt < ${stageTiles}u; kt++) {
    workgroupBarrier();
    let start = kt * TS;
    let cnt = min(TS, N - start);
    for (var i = t; i < cnt * D; i += ${tr}u) {
      let row = (b * N + start + i / D) * QKV + h * D + i % D;
      ks[i] = qkv[row + HID];
      vs[i] = qkv[row + 2u * HID];
    }
    workgroupBarrier();
    if (valid) {
      for (var j = 0u; j < TS; j++) {
        if (j < cnt) {
          var sc = 0.0;
          var dp = 0.0;
          for (var d = 0u; d < D; d++) {
            sc += q[d] * ks[j * D + d];
            dp += dov[d] * vs[j * D + d];
          }
          let ds = exp(sc * SCALE - l) * (dp - dl);
          for (var d = 0u; d < D; d++) { dq[d] += ds * ks[j * D + d]; }
        }
      }
    }
  }
  if (valid) {
    let row = (b * N + qi) * QKV + h * D;
    for (var d = 0u; d < D; d++) {
      ${store("dqkv", "row + d", "dq[d] * SCALE", acc)}
    }
  }
}`,
  };
  return [delta, dkdv, dq];
}

// ---------------------------------------------------------------------------------------------
// Cross-attention

function crossConstants(s: CrossAttentionShape): string {
  return `${constants(s)}
const T = ${s.tokens}u;
`;
}

/** Length of cross-attention's backward scratch `tmp` (probabilities and score gradients). */
export function crossAttentionBackwardScratch(s: CrossAttentionShape): number {
  return s.batch * s.pixels * s.heads * s.tokens * 2;
}

/**
 * Cross-attention's forward, one pass, one thread per (b, position, head).
 *
 * Bindings: `q` [B·n·hidden], `k`, `v` [B·tokens·hidden], `out` [B·n·hidden] (written), `lse`
 * [B·heads·n] (written, saved for the backward).
 */
export function crossAttentionForward(s: CrossAttentionShape): KernelSpec {
  check(s);
  const { batch, pixels, heads, dimHead: D, tokens } = s;
  const hidden = heads * D;
  const rows = batch * pixels * heads;
  const workgroups = linearWorkgroups(rows, 64);
  const bindings = [
    ro("q", batch * pixels * hidden),
    ro("k", batch * tokens * hidden),
    ro("v", batch * tokens * hidden),
    rw("out", batch * pixels * hidden),
    rw("lse", batch * heads * pixels),
  ];
  return {
    name: "crossAttention.forward",
    bindings,
    workgroups,
    code: `${declareBindings(bindings)}
${crossConstants(s)}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let r = gid.x + gid.y * ${workgroups[0] * 64}u;
  if (r >= ${rows}u) { return; }
  let h = r % H;
  let pos = r / H;
  let b = pos / N;
  let qa = pos * HID + h * D;
  var sc: array<f32, ${tokens}>;
  var m = -3.0e38;
  for (var j = 0u; j < T; j++) {
    let ka = (b * T + j) * HID + h * D;
    var a = 0.0;
    for (var d = 0u; d < D; d++) { a += q[qa + d] * k[ka + d]; }
    sc[j] = a * SCALE;
    m = max(m, sc[j]);
  }
  var l = 0.0;
  for (var j = 0u; j < T; j++) {
    sc[j] = exp(sc[j] - m);
    l += sc[j];
  }
  let inv = 1.0 / l;
  for (var d = 0u; d < D; d++) {
    var a = 0.0;
    for (var j = 0u; j < T; j++) { a += sc[j] * v[(b * T + j) * HID + h * D + d]; }
    out[qa + d] = a * inv;
  }
  lse[(b * H + h) * N + pos % N] = m + log(l);
}`,
  };
}

/**
 * Cross-attention's backward, two passes: per (b, position, head) the probabilities and score
 * gradients (into `tmp`, {@link crossAttentionBackwardScratch}) and dq; per (b, token, tile of
 * channels) dk and dv summed over the positions in order.
 *
 * Bindings: `dout` [B·n·hidden], `q`, `k`, `v`, `out`, `lse` (the forward's), `tmp`, `dq`
 * [B·n·hidden] (written, or added to with `accumulate`), `dk`, `dv` [B·tokens·hidden]
 * (written).
 */
export function crossAttentionBackward(
  s: CrossAttentionShape,
  options: AttentionBackwardOptions = {},
): KernelSpec[] {
  check(s);
  const { batch, pixels, heads, dimHead: D, tokens } = s;
  const hidden = heads * D;
  const rows = batch * pixels * heads;
  const dout = ro("dout", batch * pixels * hidden);
  const q = ro("q", batch * pixels * hidden);
  const k = ro("k", batch * tokens * hidden);
  const v = ro("v", batch * tokens * hidden);
  const out = ro("out", batch * pixels * hidden);
  const lse = ro("lse", batch * heads * pixels);
  const tmp = rw("tmp", crossAttentionBackwardScratch(s));
  const dq = rw("dq", batch * pixels * hidden);
  const dk = rw("dk", batch * tokens * hidden);
  const dv = rw("dv", batch * tokens * hidden);

  const rowGroups = linearWorkgroups(rows, 64);
  const rowBindings = [dout, q, k, v, out, lse, tmp, dq];
  const rowPass: KernelSpec = {
    name: "crossAttention.backward.rows",
    bindings: rowBindings,
    workgroups: rowGroups,
    code: `${declareBindings(rowBindings)}
${crossConstants(s)}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let r = gid.x + gid.y * ${rowGroups[0] * 64}u;
  if (r >= ${rows}u) { return; }
  let h = r % H;
  let pos = r / H;
  let b = pos / N;
  let qa = pos * HID + h * D;
  var delta = 0.0;
  for (var d = 0u; d < D; d++) { delta += dout[qa + d] * out[qa + d]; }
  let l = lse[(b * H + h) * N + pos % N];
  var dsc: array<f32, ${tokens}>;
  for (var j = 0u; j < T; j++) {
    let ka = (b * T + j) * HID + h * D;
    var a = 0.0;
    var dp = 0.0;
    for (var d = 0u; d < D; d++) {
      a += q[qa + d] * k[ka + d];
      dp += dout[qa + d] * v[ka + d];
    }
    let p = exp(a * SCALE - l);
    dsc[j] = p * (dp - delta);
    tmp[(r * T + j) * 2u] = p;
    tmp[(r * T + j) * 2u + 1u] = dsc[j];
  }
  for (var d = 0u; d < D; d++) {
    var a = 0.0;
    for (var j = 0u; j < T; j++) { a += dsc[j] * k[(b * T + j) * HID + h * D + d]; }
    ${store("dq", "qa + d", "a * SCALE", options.accumulate)}
  }
}`,
  };

  const tile = Math.min(hidden, 64);
  const lanes = Math.floor(WG / tile);
  const ctiles = ceilDiv(hidden, tile);
  const count = batch * tokens * ctiles;
  const tokGroups = linearWorkgroups(count, 1);
  const tokBindings = [dout, q, { ...tmp, access: "read" as const }, dk, dv];
  const tokPass: KernelSpec = {
    name: "crossAttention.backward.tokens",
    bindings: tokBindings,
    workgroups: tokGroups,
    code: `${declareBindings(tokBindings)}
${crossConstants(s)}
var<workgroup> rk: array<f32, ${WG}>;
var<workgroup> rv: array<f32, ${WG}>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let w = wid.x + wid.y * ${tokGroups[0]}u;
  if (w >= ${count}u) { return; }
  let ct = w % ${ctiles}u;
  let j = (w / ${ctiles}u) % T;
  let b = w / ${ctiles * tokens}u;
  let tc = t % ${tile}u;
  let lane = t / ${tile}u;
  let c = ct * ${tile}u + tc;
  let h = c / D;
  var ak = 0.0;
  var av = 0.0;
  if (lane < ${lanes}u && c < HID) {
    for (var p = lane; p < N; p += ${lanes}u) {
      let r = (b * N + p) * H + h;
      let at = (b * N + p) * HID + c;
      ak += tmp[(r * T + j) * 2u + 1u] * q[at];
      av += tmp[(r * T + j) * 2u] * dout[at];
    }
  }
  rk[t] = ak;
  rv[t] = av;
  workgroupBarrier();
  if (lane == 0u && c < HID) {
    var sk = 0.0;
    var sv = 0.0;
    for (var l = 0u; l < ${lanes}u; l++) {
      sk += rk[l * ${tile}u + tc];
      sv += rv[l * ${tile}u + tc];
    }
    dk[(b * T + j) * HID + c] = sk * SCALE;
    dv[(b * T + j) * HID + c] = sv;
  }
}`,
  };
  return [rowPass, tokPass];
}

// ---------------------------------------------------------------------------------------------
// References (float64; inputs any numeric arrays)

type Num = ArrayLike<number>;

/** Reads head h of a [B, rows, width] array at channel offset `offset`: [rows][D] of example b. */
function headRows(
  a: Num,
  at: { b: number; rows: number; width: number; offset: number; D: number },
): number[][] {
  const { b, rows, width, offset, D } = at;
  return Array.from(
    { length: rows },
    (_, i) => Array.from({ length: D }, (_, d) => a[(b * rows + i) * width + offset + d]),
  );
}

function softmax(row: number[]): number[] {
  const m = Math.max(...row);
  const e = row.map((v) => Math.exp(v - m));
  const s = e.reduce((a, v) => a + v, 0);
  return e.map((v) => v / s);
}

function logSumExp(row: number[]): number {
  const m = Math.max(...row);
  return m + Math.log(row.reduce((a, v) => a + Math.exp(v - m), 0));
}

function dot(a: number[], b: number[]): number {
  return a.reduce((s, v, i) => s + v * b[i], 0);
}

function qkvOf(qkv: Num, s: AttentionShape, b: number, h: number): number[][][] {
  const hidden = s.heads * s.dimHead;
  return [0, 1, 2].map((part) =>
    headRows(qkv, {
      b,
      rows: s.pixels,
      width: 3 * hidden,
      offset: part * hidden + h * s.dimHead,
      D: s.dimHead,
    })
  );
}

/** Linear attention's forward in float64: `out` [B·n·hidden] and `context` as the kernel saves it. */
export function linearAttentionForwardRef(
  qkv: Num,
  s: AttentionShape,
): { out: Float64Array; context: Float64Array } {
  const { batch, pixels: n, heads, dimHead: D } = s;
  const hidden = heads * D;
  const out = new Float64Array(batch * n * hidden);
  const context = new Float64Array(batch * heads * D * D);
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      const [q, k, v] = qkvOf(qkv, s, b, h);
      const qs = q.map((row) => softmax(row).map((p) => p * D ** -0.5));
      const ks = Array.from({ length: D }, (_, d) => softmax(k.map((row) => row[d]))); // [d][n]
      const base = (b * heads + h) * D * D;
      for (let d = 0; d < D; d++) {
        for (let e = 0; e < D; e++) {
          let a = 0;
          for (let i = 0; i < n; i++) a += ks[d][i] * v[i][e];
          context[base + d * D + e] = a;
        }
      }
      for (let i = 0; i < n; i++) {
        for (let e = 0; e < D; e++) {
          let a = 0;
          for (let d = 0; d < D; d++) a += qs[i][d] * context[base + d * D + e];
          out[(b * n + i) * hidden + h * D + e] = a;
        }
      }
    }
  }
  return { out, context };
}

/** Linear attention's backward in float64: dqkv [B·n·3·hidden] of Σ dout · out. */
export function linearAttentionBackwardRef(
  inputs: { dout: Num; qkv: Num },
  s: AttentionShape,
): Float64Array {
  const { dout, qkv } = inputs;
  const { batch, pixels: n, heads, dimHead: D } = s;
  const hidden = heads * D;
  const scale = D ** -0.5;
  const dqkv = new Float64Array(batch * n * 3 * hidden);
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      const [q, k, v] = qkvOf(qkv, s, b, h);
      const g = headRows(dout, { b, rows: n, width: hidden, offset: h * D, D });
      const qp = q.map(softmax);
      const ks = Array.from({ length: D }, (_, d) => softmax(k.map((row) => row[d])));
      const ctx = ks.map((kd) =>
        Array.from({ length: D }, (_, e) => kd.reduce((a, p, i) => a + p * v[i][e], 0))
      );
      // dcontext[d][e] = Σ_n scale qp[n][d] dout[n][e]
      const dctx = Array.from(
        { length: D },
        (_, d) =>
          Array.from({ length: D }, (_, e) => {
            let a = 0;
            for (let i = 0; i < n; i++) a += scale * qp[i][d] * g[i][e];
            return a;
          }),
      );
      for (let i = 0; i < n; i++) {
        const at = (b * n + i) * 3 * hidden + h * D;
        const dqs = Array.from({ length: D }, (_, d) => dot(g[i], ctx[d])); // d out / d q̃
        const pg = dot(qp[i], dqs);
        for (let d = 0; d < D; d++) {
          dqkv[at + d] = scale * qp[i][d] * (dqs[d] - pg);
          const dks = dot(dctx[d], v[i]);
          const r = dot(dctx[d], ctx[d]);
          dqkv[at + hidden + d] = ks[d][i] * (dks - r);
          let dv = 0;
          for (let j = 0; j < D; j++) dv += ks[j][i] * dctx[j][d];
          dqkv[at + 2 * hidden + d] = dv;
        }
      }
    }
  }
  return dqkv;
}

/** Full attention's forward in float64: `out` [B·n·hidden] and `lse` [B·heads·n]. */
export function attentionForwardRef(
  qkv: Num,
  s: AttentionShape,
): { out: Float64Array; lse: Float64Array } {
  const { batch, pixels: n, heads, dimHead: D } = s;
  const hidden = heads * D;
  const out = new Float64Array(batch * n * hidden);
  const lse = new Float64Array(batch * heads * n);
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      const [q, k, v] = qkvOf(qkv, s, b, h);
      for (let i = 0; i < n; i++) {
        const sc = k.map((kj) => dot(q[i], kj) * D ** -0.5);
        lse[(b * heads + h) * n + i] = logSumExp(sc);
        const p = softmax(sc);
        for (let e = 0; e < D; e++) {
          out[(b * n + i) * hidden + h * D + e] = p.reduce((a, pj, j) => a + pj * v[j][e], 0);
        }
      }
    }
  }
  return { out, lse };
}

/** Full attention's backward in float64: dqkv [B·n·3·hidden] of Σ dout · out. */
export function attentionBackwardRef(
  inputs: { dout: Num; qkv: Num },
  s: AttentionShape,
): Float64Array {
  const { dout, qkv } = inputs;
  const { batch, pixels: n, heads, dimHead: D } = s;
  const hidden = heads * D;
  const scale = D ** -0.5;
  const dqkv = new Float64Array(batch * n * 3 * hidden);
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      const [q, k, v] = qkvOf(qkv, s, b, h);
      const g = headRows(dout, { b, rows: n, width: hidden, offset: h * D, D });
      const at = (i: number, part: number) => (b * n + i) * 3 * hidden + part * hidden + h * D;
      for (let i = 0; i < n; i++) {
        const p = softmax(k.map((kj) => dot(q[i], kj) * scale));
        const dp = v.map((vj) => dot(g[i], vj));
        const delta = dot(p, dp);
        for (let j = 0; j < n; j++) {
          const ds = p[j] * (dp[j] - delta);
          for (let d = 0; d < D; d++) {
            dqkv[at(i, 0) + d] += scale * ds * k[j][d];
            dqkv[at(j, 1) + d] += scale * ds * q[i][d];
            dqkv[at(j, 2) + d] += p[j] * g[i][d];
          }
        }
      }
    }
  }
  return dqkv;
}

/** Cross-attention's forward in float64: `out` [B·n·hidden] and `lse` [B·heads·n]. */
export function crossAttentionForwardRef(
  inputs: { q: Num; k: Num; v: Num },
  s: CrossAttentionShape,
): { out: Float64Array; lse: Float64Array } {
  const { batch, pixels: n, heads, dimHead: D, tokens } = s;
  const hidden = heads * D;
  const out = new Float64Array(batch * n * hidden);
  const lse = new Float64Array(batch * heads * n);
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      const q = headRows(inputs.q, { b, rows: n, width: hidden, offset: h * D, D });
      const k = headRows(inputs.k, { b, rows: tokens, width: hidden, offset: h * D, D });
      const v = headRows(inputs.v, { b, rows: tokens, width: hidden, offset: h * D, D });
      for (let i = 0; i < n; i++) {
        const sc = k.map((kj) => dot(q[i], kj) / Math.sqrt(D));
        lse[(b * heads + h) * n + i] = logSumExp(sc);
        const p = softmax(sc);
        for (let e = 0; e < D; e++) {
          out[(b * n + i) * hidden + h * D + e] = p.reduce((a, pj, j) => a + pj * v[j][e], 0);
        }
      }
    }
  }
  return { out, lse };
}

/** Cross-attention's backward in float64: dq [B·n·hidden], dk, dv [B·tokens·hidden]. */
export function crossAttentionBackwardRef(
  inputs: { dout: Num; q: Num; k: Num; v: Num },
  s: CrossAttentionShape,
): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const { batch, pixels: n, heads, dimHead: D, tokens } = s;
  const hidden = heads * D;
  const scale = 1 / Math.sqrt(D);
  const dq = new Float64Array(batch * n * hidden);
  const dk = new Float64Array(batch * tokens * hidden);
  const dv = new Float64Array(batch * tokens * hidden);
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      const rows = (a: Num, r: number) =>
        headRows(a, { b, rows: r, width: hidden, offset: h * D, D });
      const q = rows(inputs.q, n);
      const g = rows(inputs.dout, n);
      const k = rows(inputs.k, tokens);
      const v = rows(inputs.v, tokens);
      for (let i = 0; i < n; i++) {
        const p = softmax(k.map((kj) => dot(q[i], kj) * scale));
        const dp = v.map((vj) => dot(g[i], vj));
        const delta = dot(p, dp);
        for (let j = 0; j < tokens; j++) {
          const ds = p[j] * (dp[j] - delta);
          for (let d = 0; d < D; d++) {
            dq[(b * n + i) * hidden + h * D + d] += scale * ds * k[j][d];
            dk[(b * tokens + j) * hidden + h * D + d] += scale * ds * q[i][d];
            dv[(b * tokens + j) * hidden + h * D + d] += p[j] * g[i][d];
          }
        }
      }
    }
  }
  return { dq, dk, dv };
}
