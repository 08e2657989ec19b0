/**
 * The update kernels of training on flat buffers: the global gradient norm (for clipping), Adam
 * and the EMA of the weights. Parameters, gradients and each Adam moment are one flat f32 buffer
 * each (the engine pads each parameter to a 64-float boundary); every kernel here is
 * element-wise over the whole buffer, so zero padding stays exactly zero as long as the
 * gradient's padding is zero (m' = 0, v' = 0, p' = 0 - 0 · stepSize = 0, ema' = 0).
 *
 * Per-step scalars (learning rate, bias corrections, EMA decay) come in a small storage binding
 * `hyper` that the host fills with {@link adamHyper} / {@link emaHyper} and writes with one
 * writeBuffer per step, so one pipeline serves every step. Each hyper value is the float32
 * rounding of the same float64 number the tfjs code (src/train) uploads as a scalar tensor, and
 * each kernel applies the tfjs code's float32 operations in its order, so the flat update equals
 * the per-tensor tfjs one up to the GPU's sqrt/division rounding (and FMA contraction).
 * @module
 */
import type { EmaConfig, OptimizerConfig } from "../../../schemas/experiment.ts";
import { emaDecay } from "../../train/ema.ts";
import { learningRate, type LrOptions } from "../../train/lr.ts";
import { ADAM_CONSTANTS, adamConstants } from "../../train/optimizer.ts";
import {
  type Binding,
  ceilDiv,
  declareBindings,
  f32,
  type KernelSpec,
  linearWorkgroups,
} from "../kernel.ts";

/** Threads per workgroup of every kernel here. */
export const WORKGROUP_SIZE = 256;

/** Most partial sums of {@link globalNormSquared}'s first pass (its `tmp` length). */
export const NORM_MAX_PARTIALS = 1024;

/** Elements each first-pass thread sums at least, before the partials reach their maximum. */
const NORM_PER_THREAD = 16;

/** The ε that clip.ts adds to the norm before dividing (`tf.add(norm, 1e-6)`). */
const CLIP_EPSILON = 1e-6;

/**
 * The length of {@link adamUpdate}'s `hyper`:
 * `[b1, c1, b2, c2, sqrtBc2, eps, stepSize, maxNorm]` = β1, 1 - β1, β2, 1 - β2, √(1 - β2^k), ε,
 * lr_k / (1 - β1^k) and the clipping norm (`clipGradNorm`; 0 without clipping, unread).
 */
export const ADAM_HYPER_LENGTH = 8;

/** The length of {@link emaUpdate}'s `hyper`: `[d, 1 - d]` (`[0, 1]`: copy, during start-up). */
export const EMA_HYPER_LENGTH = 2;

/** Number of partial sums (workgroups) of {@link globalNormSquared}'s first pass over n values. */
export function normPartials(n: number): number {
  return Math.min(NORM_MAX_PARTIALS, Math.max(1, ceilDiv(n, WORKGROUP_SIZE * NORM_PER_THREAD)));
}

/** The WGSL of one workgroup's tree sum of `sh` (256 entries) into `sh[0]`, in a fixed order. */
const TREE_SUM = `
  for (var s = ${WORKGROUP_SIZE / 2}u; s > 0u; s = s >> 1u) {
    if (lid.x < s) { sh[lid.x] = sh[lid.x] + sh[lid.x + s]; }
    workgroupBarrier();
  }`;

/**
 * The sum of squares of `g` [n], in two passes with a fixed order:
 * 1. `optimizer.norm.partials`: P = {@link normPartials}(n) workgroups; thread t of workgroup w
 *    sums g[i]² for i = 256 w + t, + 256 P, ... in order, then the workgroup sums its 256
 *    values as a tree; bindings `g` (read, n), `tmp` (read_write, P: scratch).
 * 2. `optimizer.norm.total`: one workgroup sums the P partials the same way; bindings `tmp`
 *    (read, P), `norm` (read_write, 1): ‖g‖², what {@link adamUpdate} reads.
 *
 * clip.ts sums each tensor's squares and adds the sums (tfjs's own order); this sums the flat
 * buffer in another order, so the two norms differ in float32 rounding only (relative
 * ~1e-7 at test sizes; the bound grows with the terms per thread, at most n / (256 · 1024)).
 */
export function globalNormSquared(n: number): KernelSpec[] {
  const partials = normPartials(n);
  const first: Binding[] = [
    { name: "g", access: "read", length: n },
    { name: "tmp", access: "read_write", length: partials },
  ];
  const second: Binding[] = [
    { name: "tmp", access: "read", length: partials },
    { name: "norm", access: "read_write", length: 1 },
  ];
  const header = `var<workgroup> sh: array<f32, ${WORKGROUP_SIZE}>;
@compute @workgroup_size(${WORKGROUP_SIZE})
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {`;
  return [
    {
      name: "optimizer.norm.partials",
      bindings: first,
      workgroups: [partials, 1, 1],
      code: `${declareBindings(first)}
${header}
  var acc = 0.0;
  for (var i = wid.x * ${WORKGROUP_SIZE}u + lid.x; i < ${n}u; i = i + ${
        partials * WORKGROUP_SIZE
      }u) {
    let x = g[i];
    acc = acc + x * x;
  }
  sh[lid.x] = acc;
  workgroupBarrier();${TREE_SUM}
  if (lid.x == 0u) { tmp[wid.x] = sh[0]; }
}
`,
    },
    {
      name: "optimizer.norm.total",
      bindings: second,
      workgroups: [1, 1, 1],
      code: `${declareBindings(second)}
${header}
  var acc = 0.0;
  for (var i = lid.x; i < ${partials}u; i = i + ${WORKGROUP_SIZE}u) {
    acc = acc + tmp[i];
  }
  sh[lid.x] = acc;
  workgroupBarrier();${TREE_SUM}
  if (lid.x == 0u) { norm[0] = sh[0]; }
}
`,
    },
  ];
}

/** float32 rounding of each step, as WGSL's f32 (and tfjs's Float32Array results) round. */
const r = Math.fround;

/** The 256 values summed as {@link globalNormSquared}'s workgroup tree. */
function treeSum(values: Float32Array): number {
  const sh = Float32Array.from(values);
  for (let s = WORKGROUP_SIZE / 2; s > 0; s >>= 1) {
    for (let t = 0; t < s; t++) sh[t] = sh[t] + sh[t + s];
  }
  return sh[0];
}

/** {@link globalNormSquared}'s ‖g‖² in float32, in the kernel's order. */
export function globalNormSquaredRef(g: Float32Array): number {
  const n = g.length;
  const partials = normPartials(n);
  const tmp = new Float32Array(partials);
  const sh = new Float32Array(WORKGROUP_SIZE);
  for (let w = 0; w < partials; w++) {
    for (let t = 0; t < WORKGROUP_SIZE; t++) {
      let acc = 0;
      for (let i = w * WORKGROUP_SIZE + t; i < n; i += partials * WORKGROUP_SIZE) {
        acc = r(acc + r(g[i] * g[i]));
      }
      sh[t] = acc;
    }
    tmp[w] = treeSum(sh);
  }
  for (let t = 0; t < WORKGROUP_SIZE; t++) {
    let acc = 0;
    for (let i = t; i < partials; i += WORKGROUP_SIZE) acc = r(acc + tmp[i]);
    sh[t] = acc;
  }
  return treeSum(sh);
}

/** Options of {@link adamUpdate}. */
export interface AdamKernelOptions {
  /**
   * Scale the gradient by min(maxNorm / (√norm[0] + 1e-6), 1) first (clip.ts), with `norm` the
   * output of {@link globalNormSquared} and maxNorm `hyper[7]` (default false).
   */
  clip?: boolean;
}

/** The linear index of an element-wise kernel over `workgroups` of 256 (folded past 65535). */
function linearIndex(workgroups: [number, number, number]): string {
  return `gid.x + gid.y * ${workgroups[0] * WORKGROUP_SIZE}u`;
}

/**
 * One Adam step over flat buffers of n floats, as src/train/optimizer.ts's `Adam.apply` (after
 * clip.ts when `options.clip`): with ĝ = g · scale (scale 1 without clipping),
 * m' = m b1 + ĝ c1, v' = v b2 + ĝ² c2, p' = p - (m' / (√v' / sqrtBc2 + eps)) · stepSize.
 * No weight decay (the tfjs Adam has none).
 *
 * Bindings: `p` (read_write, n), `g` (read, n), `m` (read_write, n), `v` (read_write, n),
 * `norm` (read, 1: ‖g‖² from {@link globalNormSquared}; only with `clip`), `hyper` (read,
 * {@link ADAM_HYPER_LENGTH}: {@link adamHyper}). One thread per element, 256 per workgroup.
 */
export function adamUpdate(n: number, options: AdamKernelOptions = {}): KernelSpec {
  const clip = options.clip === true;
  const bindings: Binding[] = [
    { name: "p", access: "read_write", length: n },
    { name: "g", access: "read", length: n },
    { name: "m", access: "read_write", length: n },
    { name: "v", access: "read_write", length: n },
    ...(clip ? [{ name: "norm", access: "read" as const, length: 1 }] : []),
    { name: "hyper", access: "read", length: ADAM_HYPER_LENGTH },
  ];
  const workgroups = linearWorkgroups(n, WORKGROUP_SIZE);
  const gradient = clip
    ? `let scale = min(hyper[7] / (sqrt(norm[0]) + ${f32(CLIP_EPSILON)}), 1.0);
  let gi = g[i] * scale;`
    : `let gi = g[i];`;
  return {
    name: clip ? "optimizer.adam.clip" : "optimizer.adam",
    bindings,
    workgroups,
    code: `${declareBindings(bindings)}
@compute @workgroup_size(${WORKGROUP_SIZE})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = ${linearIndex(workgroups)};
  if (i >= ${n}u) { return; }
  ${gradient}
  let m1 = m[i] * hyper[0] + gi * hyper[1];
  let v1 = v[i] * hyper[2] + (gi * gi) * hyper[3];
  m[i] = m1;
  v[i] = v1;
  let denom = sqrt(v1) / hyper[4] + hyper[5];
  p[i] = p[i] - (m1 / denom) * hyper[6];
}
`,
  };
}

/** The flat state {@link adamUpdateRef} updates. */
export interface AdamState {
  /** Parameters. */
  p: Float32Array<ArrayBuffer>;
  /** First moment. */
  m: Float32Array<ArrayBuffer>;
  /** Second moment. */
  v: Float32Array<ArrayBuffer>;
}

/**
 * {@link adamUpdate} in float32 on the host: the new p, m, v (the inputs are not changed).
 * `options.norm` is ‖g‖² (clipping when given, as the kernel's `clip`).
 */
export function adamUpdateRef(
  state: AdamState & { g: Float32Array },
  hyper: Float32Array,
  options: { norm?: number } = {},
): AdamState {
  const [b1, c1, b2, c2, sqrtBc2, eps, stepSize, maxNorm] = hyper;
  const n = state.p.length;
  const scale = options.norm === undefined
    ? 1
    : Math.min(r(maxNorm / r(r(Math.sqrt(options.norm)) + r(CLIP_EPSILON))), 1);
  const p = new Float32Array(n);
  const m = new Float32Array(n);
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const g = options.norm === undefined ? state.g[i] : r(state.g[i] * scale);
    m[i] = r(r(state.m[i] * b1) + r(g * c1));
    v[i] = r(r(state.v[i] * b2) + r(r(g * g) * c2));
    const denom = r(r(r(Math.sqrt(v[i])) / sqrtBc2) + eps);
    p[i] = r(state.p[i] - r(r(m[i] / denom) * stepSize));
  }
  return { p, m, v };
}

/** What {@link adamHyper} reads: the optimizer section and the run's length (for the lr schedule). */
export type AdamHyperConfig =
  & Pick<OptimizerConfig, "beta1" | "beta2" | "epsilon" | "clipGradNorm">
  & LrOptions;

/**
 * {@link adamUpdate}'s `hyper` for optimizer step `step` (1-based, the step about to be
 * applied): src/train/optimizer.ts's `adamConstants` with the rate of src/train/lr.ts's
 * `learningRate` (or `options.lr`), then `clipGradNorm` (0 when absent).
 */
export function adamHyper(
  step: number,
  config: AdamHyperConfig,
  options: { lr?: number } = {},
): Float32Array<ArrayBuffer> {
  const lr = options.lr ?? learningRate(step, config);
  const constants = adamConstants(step, { ...config, lr });
  return Float32Array.from([
    ...ADAM_CONSTANTS.map((key) => constants[key]),
    config.clipGradNorm ?? 0,
  ]);
}

/**
 * The EMA update over flat buffers of n floats, as src/train/ema.ts's `Ema.update`:
 * ema' = ema · hyper[0] + p · hyper[1] ({@link emaHyper}: [d, 1 - d], or [0, 1] to copy p while
 * step <= startStep). Bindings: `ema` (read_write, n), `p` (read, n), `hyper` (read,
 * {@link EMA_HYPER_LENGTH}). Run it after {@link adamUpdate} of the same step.
 */
export function emaUpdate(n: number): KernelSpec {
  const bindings: Binding[] = [
    { name: "ema", access: "read_write", length: n },
    { name: "p", access: "read", length: n },
    { name: "hyper", access: "read", length: EMA_HYPER_LENGTH },
  ];
  const workgroups = linearWorkgroups(n, WORKGROUP_SIZE);
  return {
    name: "optimizer.ema",
    bindings,
    workgroups,
    code: `${declareBindings(bindings)}
@compute @workgroup_size(${WORKGROUP_SIZE})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = ${linearIndex(workgroups)};
  if (i >= ${n}u) { return; }
  ema[i] = ema[i] * hyper[0] + p[i] * hyper[1];
}
`,
  };
}

/** {@link emaUpdate} in float32 on the host: the new average. */
export function emaUpdateRef(
  buffers: { ema: Float32Array; p: Float32Array },
  hyper: Float32Array,
): Float32Array<ArrayBuffer> {
  const out = new Float32Array(buffers.ema.length);
  for (let i = 0; i < out.length; i++) {
    out[i] = r(r(buffers.ema[i] * hyper[0]) + r(buffers.p[i] * hyper[1]));
  }
  return out;
}

/**
 * {@link emaUpdate}'s `hyper` after optimizer step `step` (1-based): [d, 1 - d] with d
 * src/train/ema.ts's `emaDecay`, or [0, 1] (ema' = p exactly, for finite values) while
 * step <= startStep, where `Ema.update` assigns the weights.
 */
export function emaHyper(step: number, config: EmaConfig): Float32Array<ArrayBuffer> {
  if (step <= config.startStep) return Float32Array.from([0, 1]);
  const d = emaDecay(step, config);
  return Float32Array.from([d, 1 - d]);
}
