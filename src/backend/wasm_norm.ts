/**
 * GroupNorm with its affine transform as one op for the wasm backend, with a hand-written
 * gradient:
 *
 *   y = x̂ · γ + β,   x̂ = (x - mean) / √(var + eps), mean and (biased) var per example and group
 *
 * The composed version (`tf.moments`, sub, rsqrt, mul, add) is ~10 kernels forward and ~25
 * backward and saves ~8 activations; this is two JS passes over x forward and two backward,
 * saving only x and the per-group mean and 1/σ. Sums are float64 in a fixed order
 * (deterministic), results are stored as float32.
 *
 * A fused SiLU and time scale/shift were tried too: in JS they were no faster than the
 * backend's own vectorised kernels (Math.exp alone costs ~12 ns), so they stay composed.
 *
 * {@link groupNormCore} uses it on wasm once {@link normKernels} are registered (by
 * `registerWasmKernels`); elsewhere `src/model/layers.ts` composes the ops.
 * @module
 */
import { tf } from "../tf.ts";
import {
  fusedKernelPair,
  heapOffset,
  type Info,
  type WasmBackend,
  wasmKernelActive,
  wholeHeapF32,
} from "./wasm_heap.ts";

const FORWARD = "DdpmGroupNorm";
const BACKWARD = "DdpmGroupNormGrad";

/** Options of {@link groupNormCore}. */
export interface GroupNormOptions {
  /** Number of groups (divides the channels). */
  groups: number;
  /** Added to the variance; PyTorch's default 1e-5. */
  epsilon?: number;
}

interface Layout {
  b: number;
  hw: number;
  c: number;
  groups: number;
  /** The group of each channel. */
  groupOf: Int32Array;
  /** Elements per example and group. */
  count: number;
}

function layoutOf(x: Info, groups: number): Layout {
  const [b, h, w, c] = x.shape;
  if (x.shape.length !== 4 || c % groups !== 0) {
    throw new Error(`${FORWARD}: ${groups} groups do not divide the channels of ${x.shape}`);
  }
  const cg = c / groups;
  const groupOf = Int32Array.from({ length: c }, (_, ch) => Math.floor(ch / cg));
  return { b, hw: h * w, c, groups, groupOf, count: h * w * cg };
}

function need(inputs: tf.NamedTensorInfoMap, name: string): Info {
  const info = inputs[name];
  if (info === undefined) throw new Error(`${FORWARD}: missing input '${name}'`);
  return info;
}

/** A Float32Array over the whole heap (take it after allocating: growth detaches it). */
function f32(backend: WasmBackend): Float32Array {
  return wholeHeapF32(backend);
}

/** The float index of a tensor's first element on the heap. */
function at(backend: WasmBackend, info: Info): number {
  return heapOffset(backend, info) >>> 2;
}

/** Per example, one pass for the group sums (channel by channel), one for the output. */
function forward(
  inputs: tf.NamedTensorInfoMap,
  backend: WasmBackend,
  attrs: tf.NamedAttrMap,
): Info[] {
  const x = need(inputs, "x");
  const { b, hw, c, groups, groupOf, count } = layoutOf(x, attrs.groups as number);
  const eps = attrs.epsilon as number;
  const y = backend.makeOutput(x.shape, "float32");
  const stats = backend.makeOutput([b, groups, 2], "float32");
  const f = f32(backend);
  const xo = at(backend, x);
  const yo = at(backend, y);
  const so = at(backend, stats);
  const go = at(backend, need(inputs, "gamma"));
  const bo = at(backend, need(inputs, "beta"));
  const sums = new Float64Array(groups);
  const squares = new Float64Array(groups);
  const mul = new Float64Array(c);
  const add = new Float64Array(c);
  for (let e = 0; e < b; e++) {
    const base = e * hw * c;
    const end = base + hw * c;
    sums.fill(0);
    squares.fill(0);
    for (let ch = 0; ch < c; ch++) {
      let sum = 0;
      let square = 0;
      for (let k = xo + base + ch; k < xo + end; k += c) {
        const v = f[k];
        sum += v;
        square += v * v;
      }
      sums[groupOf[ch]] += sum;
      squares[groupOf[ch]] += square;
    }
    for (let g = 0; g < groups; g++) {
      const mean = sums[g] / count;
      f[so + (e * groups + g) * 2] = mean;
      f[so + (e * groups + g) * 2 + 1] = 1 /
        Math.sqrt(Math.max(0, squares[g] / count - mean * mean) + eps);
    }
    // y = (x - mean) · rstd · γ + β = x · mul + add.
    for (let ch = 0; ch < c; ch++) {
      const g = groupOf[ch];
      const mean = f[so + (e * groups + g) * 2];
      const rstd = f[so + (e * groups + g) * 2 + 1];
      const gamma = f[go + ch];
      mul[ch] = rstd * gamma;
      add[ch] = f[bo + ch] - mean * rstd * gamma;
    }
    for (let i = base; i < end; i += c) {
      for (let ch = 0; ch < c; ch++) f[yo + i + ch] = f[xo + i + ch] * mul[ch] + add[ch];
    }
  }
  return [y, stats];
}

/**
 * dγ = Σ dy·x̂, dβ = Σ dy, and dx = (dx̂ - mean(dx̂) - x̂ · mean(dx̂ · x̂)) / σ with dx̂ = dy·γ,
 * means over each example's group. Pass 1 keeps dx̂ in dx (float32), pass 2 finishes dx.
 */
function backward(
  inputs: tf.NamedTensorInfoMap,
  backend: WasmBackend,
  attrs: tf.NamedAttrMap,
): Info[] {
  const x = need(inputs, "x");
  const dy = need(inputs, "dy");
  const stats = need(inputs, "stats");
  const { b, hw, c, groups, groupOf, count } = layoutOf(x, attrs.groups as number);
  const dx = backend.makeOutput(x.shape, "float32");
  const dgamma = backend.makeOutput([c], "float32");
  const dbeta = backend.makeOutput([c], "float32");
  const f = f32(backend);
  const xo = at(backend, x);
  const dyo = at(backend, dy);
  const dxo = at(backend, dx);
  const so = at(backend, stats);
  const go = at(backend, need(inputs, "gamma"));
  const dg = new Float64Array(c);
  const db = new Float64Array(c);
  const g1 = new Float64Array(groups);
  const g2 = new Float64Array(groups);
  for (let e = 0; e < b; e++) {
    const base = e * hw * c;
    const end = base + hw * c;
    g1.fill(0);
    g2.fill(0);
    for (let ch = 0; ch < c; ch++) {
      const g = groupOf[ch];
      const mean = f[so + (e * groups + g) * 2];
      const rstd = f[so + (e * groups + g) * 2 + 1];
      const gamma = f[go + ch];
      let sumDg = 0;
      let sumDb = 0;
      let sumDx = 0;
      let sumDxXh = 0;
      for (let k = base + ch; k < end; k += c) {
        const xh = (f[xo + k] - mean) * rstd;
        const d = f[dyo + k];
        sumDg += d * xh;
        sumDb += d;
        const dxh = d * gamma;
        sumDx += dxh;
        sumDxXh += dxh * xh;
        f[dxo + k] = dxh;
      }
      dg[ch] += sumDg;
      db[ch] += sumDb;
      g1[g] += sumDx;
      g2[g] += sumDxXh;
    }
    for (let ch = 0; ch < c; ch++) {
      const g = groupOf[ch];
      const mean = f[so + (e * groups + g) * 2];
      const rstd = f[so + (e * groups + g) * 2 + 1];
      const m1 = g1[g] / count;
      const m2 = g2[g] / count;
      for (let k = base + ch; k < end; k += c) {
        const xh = (f[xo + k] - mean) * rstd;
        f[dxo + k] = rstd * (f[dxo + k] - m1 - xh * m2);
      }
    }
  }
  const dgo = at(backend, dgamma);
  const dbo = at(backend, dbeta);
  for (let ch = 0; ch < c; ch++) {
    f[dgo + ch] = dg[ch];
    f[dbo + ch] = db[ch];
  }
  return [dx, dgamma, dbeta];
}

/** The kernels of the fused GroupNorm for the wasm backend (installed by registerWasmKernels). */
export const normKernels: tf.KernelConfig[] = fusedKernelPair(
  { forward: FORWARD, backward: BACKWARD },
  { forward, backward },
);

/** Whether the fused GroupNorm runs on the active backend. */
export function hasFusedGroupNorm(): boolean {
  return wasmKernelActive(FORWARD);
}

/**
 * GroupNorm of `x` [B, H, W, C] with affine `gamma`, `beta` [C], with its gradient, on the
 * fused wasm kernels. Use only when {@link hasFusedGroupNorm}.
 */
export function groupNormCore(
  x: tf.Tensor4D,
  affine: { gamma: tf.Tensor; beta: tf.Tensor },
  options: GroupNormOptions,
): tf.Tensor4D {
  const attrs = { groups: options.groups, epsilon: options.epsilon ?? 1e-5 };
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xIn, gamma, beta, save] = args as [tf.Tensor, tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    const [y, stats] = tf.engine().runKernel(
      FORWARD,
      { x: xIn, gamma, beta },
      attrs,
    ) as tf.Tensor[];
    save([xIn, gamma, stats]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sx, sgamma, sstats] = saved;
        return tf.engine().runKernel(
          BACKWARD,
          { dy, x: sx, gamma: sgamma, stats: sstats },
          attrs,
        ) as tf.Tensor[];
      },
    };
  });
  return op(x, affine.gamma, affine.beta) as tf.Tensor4D;
}
