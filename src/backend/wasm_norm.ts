/**
 * GroupNorm fused with what follows it in the U-Net, as one op for the wasm backend with a
 * hand-written gradient:
 *
 *   y = act((x̂ · γ + β) · (1 + scale) + shift),   x̂ = (x - mean) / √(var + eps) per group
 *
 * with `scale` and `shift` [B, 1, 1, C] optional (the residual blocks' time conditioning) and
 * `act` SiLU or the identity. The composed version is ~12 kernels forward and ~25 backward,
 * saving ~10 activations; this is one pass for the statistics and one for the output forward,
 * two passes backward, saving only x and the per-group mean and 1/σ. The arithmetic is done in
 * float64 and stored as float32, in a fixed order (deterministic).
 *
 * {@link groupNormCore} uses it on wasm once {@link normKernels} are registered (by
 * `registerWasmKernels`); elsewhere callers compose the ops (see `src/model/layers.ts`).
 * @module
 */
import { tf } from "../tf.ts";
import { heapOffset, type Info, type WasmBackend } from "./wasm_heap.ts";

const BACKEND = "wasm";
const FORWARD = "DdpmGroupNorm";
const BACKWARD = "DdpmGroupNormGrad";

/** Options of {@link groupNormCore}. */
export interface GroupNormOptions {
  /** Number of groups (divides the channels). */
  groups: number;
  /** Added to the variance; PyTorch's default 1e-5. */
  epsilon?: number;
  /** Apply SiLU to the result. */
  silu?: boolean;
  /** The time conditioning: y = (normalised · γ + β) · (1 + scale) + shift, both [B, 1, 1, C]. */
  scaleShift?: { scale: tf.Tensor; shift: tf.Tensor };
}

interface Layout {
  b: number;
  hw: number;
  c: number;
  groups: number;
  /** Channels per group. */
  cg: number;
}

function layoutOf(x: Info, groups: number): Layout {
  const [b, h, w, c] = x.shape;
  if (x.shape.length !== 4 || c % groups !== 0) {
    throw new Error(`${FORWARD}: ${groups} groups do not divide the channels of ${x.shape}`);
  }
  return { b, hw: h * w, c, groups, cg: c / groups };
}

function need(inputs: tf.NamedTensorInfoMap, name: string): Info {
  const info = inputs[name];
  if (info === undefined) throw new Error(`${FORWARD}: missing input '${name}'`);
  return info;
}

/** Reads the heap at call time (a growing heap detaches older views). */
function f32(backend: WasmBackend): Float32Array {
  return new Float32Array(backend.wasm.HEAPU8.buffer);
}

function at(backend: WasmBackend, info: Info): number {
  return heapOffset(backend, info) >>> 2;
}

function forward(
  inputs: tf.NamedTensorInfoMap,
  backend: WasmBackend,
  attrs: tf.NamedAttrMap,
): Info[] {
  const x = need(inputs, "x");
  const { b, hw, c, groups, cg } = layoutOf(x, attrs.groups as number);
  const eps = attrs.epsilon as number;
  const silu = attrs.silu === true;
  const scale = inputs.scale;
  const shift = inputs.shift;
  for (const t of [scale, shift]) {
    if (t !== undefined && t.shape.join() !== [b, 1, 1, c].join()) {
      throw new Error(`${FORWARD}: scale and shift must be [${b}, 1, 1, ${c}], got ${t.shape}`);
    }
  }
  const y = backend.makeOutput(x.shape, "float32");
  const stats = backend.makeOutput([b, groups, 2], "float32");
  const f = f32(backend);
  const xo = at(backend, x);
  const yo = at(backend, y);
  const so = at(backend, stats);
  const go = at(backend, need(inputs, "gamma"));
  const bo = at(backend, need(inputs, "beta"));
  const sco = scale === undefined ? -1 : at(backend, scale);
  const sho = shift === undefined ? -1 : at(backend, shift);
  const count = hw * cg;
  const sums = new Float64Array(groups);
  const mean = new Float64Array(groups);
  const rstd = new Float64Array(groups);
  const mul = new Float64Array(c);
  const add = new Float64Array(c);
  for (let e = 0; e < b; e++) {
    const base = xo + e * hw * c;
    sums.fill(0);
    for (let i = 0; i < hw; i++) {
      const row = base + i * c;
      for (let ch = 0; ch < c; ch++) sums[(ch / cg) | 0] += f[row + ch];
    }
    for (let g = 0; g < groups; g++) mean[g] = sums[g] / count;
    sums.fill(0);
    for (let i = 0; i < hw; i++) {
      const row = base + i * c;
      for (let ch = 0; ch < c; ch++) {
        const d = f[row + ch] - mean[(ch / cg) | 0];
        sums[(ch / cg) | 0] += d * d;
      }
    }
    for (let g = 0; g < groups; g++) {
      rstd[g] = 1 / Math.sqrt(sums[g] / count + eps);
      f[so + (e * groups + g) * 2] = mean[g];
      f[so + (e * groups + g) * 2 + 1] = rstd[g];
    }
    // u = ((x - mean) · rstd · γ + β) · (1 + scale) + shift = x · mul + add.
    for (let ch = 0; ch < c; ch++) {
      const g = (ch / cg) | 0;
      const s1 = sco < 0 ? 1 : 1 + f[sco + e * c + ch];
      const t = sho < 0 ? 0 : f[sho + e * c + ch];
      const gamma = f[go + ch];
      mul[ch] = rstd[g] * gamma * s1;
      add[ch] = (f[bo + ch] - mean[g] * rstd[g] * gamma) * s1 + t;
    }
    const out = yo + e * hw * c;
    for (let i = 0; i < hw; i++) {
      const row = i * c;
      for (let ch = 0; ch < c; ch++) {
        const u = f[base + row + ch] * mul[ch] + add[ch];
        f[out + row + ch] = silu ? u / (1 + Math.exp(-u)) : u;
      }
    }
  }
  return [y, stats];
}

function backward(
  inputs: tf.NamedTensorInfoMap,
  backend: WasmBackend,
  attrs: tf.NamedAttrMap,
): Info[] {
  const x = need(inputs, "x");
  const dy = need(inputs, "dy");
  const stats = need(inputs, "stats");
  const gammaInfo = need(inputs, "gamma");
  const { b, hw, c, groups, cg } = layoutOf(x, attrs.groups as number);
  const silu = attrs.silu === true;
  const scale = inputs.scale;
  const shift = inputs.shift;
  const dx = backend.makeOutput(x.shape, "float32");
  const dgamma = backend.makeOutput([c], "float32");
  const dbeta = backend.makeOutput([c], "float32");
  const dscale = scale === undefined ? undefined : backend.makeOutput(scale.shape, "float32");
  const dshift = shift === undefined ? undefined : backend.makeOutput(shift.shape, "float32");
  const f = f32(backend);
  const xo = at(backend, x);
  const dyo = at(backend, dy);
  const dxo = at(backend, dx);
  const so = at(backend, stats);
  const go = at(backend, gammaInfo);
  const bo = at(backend, need(inputs, "beta"));
  const sco = scale === undefined ? -1 : at(backend, scale);
  const sho = shift === undefined ? -1 : at(backend, shift);
  const count = hw * cg;
  const dg = new Float64Array(c);
  const db = new Float64Array(c);
  const ds = new Float64Array(c);
  const dt = new Float64Array(c);
  const s1 = new Float64Array(c);
  const t = new Float64Array(c);
  const m = new Float64Array(c);
  const r = new Float64Array(c);
  const gamma = new Float64Array(c);
  const beta = new Float64Array(c);
  const g1 = new Float64Array(groups);
  const g2 = new Float64Array(groups);
  for (let ch = 0; ch < c; ch++) {
    gamma[ch] = f[go + ch];
    beta[ch] = f[bo + ch];
  }
  for (let e = 0; e < b; e++) {
    for (let ch = 0; ch < c; ch++) {
      const g = (ch / cg) | 0;
      m[ch] = f[so + (e * groups + g) * 2];
      r[ch] = f[so + (e * groups + g) * 2 + 1];
      s1[ch] = sco < 0 ? 1 : 1 + f[sco + e * c + ch];
      t[ch] = sho < 0 ? 0 : f[sho + e * c + ch];
    }
    ds.fill(0);
    dt.fill(0);
    g1.fill(0);
    g2.fill(0);
    const base = e * hw * c;
    // Pass 1: du, the per-example scale/shift sums, γ/β sums, and dx̂ (kept in dx).
    for (let i = 0; i < hw; i++) {
      const row = base + i * c;
      for (let ch = 0; ch < c; ch++) {
        const xh = (f[xo + row + ch] - m[ch]) * r[ch];
        const z = xh * gamma[ch] + beta[ch];
        let du = f[dyo + row + ch];
        if (silu) {
          const u = z * s1[ch] + t[ch];
          const sg = 1 / (1 + Math.exp(-u));
          du *= sg * (1 + u * (1 - sg));
        }
        ds[ch] += du * z;
        dt[ch] += du;
        const dz = du * s1[ch];
        dg[ch] += dz * xh;
        db[ch] += dz;
        const dxh = dz * gamma[ch];
        const g = (ch / cg) | 0;
        g1[g] += dxh;
        g2[g] += dxh * xh;
        f[dxo + row + ch] = dxh;
      }
    }
    for (let g = 0; g < groups; g++) {
      g1[g] /= count;
      g2[g] /= count;
    }
    // Pass 2: dx = (dx̂ - mean(dx̂) - x̂ · mean(dx̂ · x̂)) / σ, dx̂ kept as float32 in dx.
    for (let i = 0; i < hw; i++) {
      const row = base + i * c;
      for (let ch = 0; ch < c; ch++) {
        const g = (ch / cg) | 0;
        const xh = (f[xo + row + ch] - m[ch]) * r[ch];
        f[dxo + row + ch] = r[ch] * (f[dxo + row + ch] - g1[g] - xh * g2[g]);
      }
    }
    if (dscale !== undefined) {
      const o = at(backend, dscale);
      for (let ch = 0; ch < c; ch++) f[o + e * c + ch] = ds[ch];
    }
    if (dshift !== undefined) {
      const o = at(backend, dshift);
      for (let ch = 0; ch < c; ch++) f[o + e * c + ch] = dt[ch];
    }
  }
  const dgo = at(backend, dgamma);
  const dbo = at(backend, dbeta);
  for (let ch = 0; ch < c; ch++) {
    f[dgo + ch] = dg[ch];
    f[dbo + ch] = db[ch];
  }
  const out = [dx, dgamma, dbeta];
  if (dscale !== undefined) out.push(dscale);
  if (dshift !== undefined) out.push(dshift);
  return out;
}

/** The kernels of the fused GroupNorm for the wasm backend (installed by registerWasmKernels). */
export const normKernels: tf.KernelConfig[] = [
  {
    kernelName: FORWARD,
    backendName: BACKEND,
    kernelFunc: ({ inputs, backend, attrs }) =>
      forward(inputs, backend as unknown as WasmBackend, attrs ?? {}),
  },
  {
    kernelName: BACKWARD,
    backendName: BACKEND,
    kernelFunc: ({ inputs, backend, attrs }) =>
      backward(inputs, backend as unknown as WasmBackend, attrs ?? {}),
  },
];

/** Whether the fused GroupNorm runs on the active backend. */
export function hasFusedGroupNorm(): boolean {
  return tf.getBackend() === BACKEND && tf.getKernel(FORWARD, BACKEND) !== undefined;
}

/**
 * GroupNorm of `x` [B, H, W, C] with affine `gamma`, `beta` [C], then the optional time
 * conditioning and SiLU (see the module doc), with its gradient, on the fused wasm kernels. Use
 * only when {@link hasFusedGroupNorm}.
 */
export function groupNormCore(
  x: tf.Tensor4D,
  affine: { gamma: tf.Tensor; beta: tf.Tensor },
  options: GroupNormOptions,
): tf.Tensor4D {
  const attrs = {
    groups: options.groups,
    epsilon: options.epsilon ?? 1e-5,
    silu: options.silu === true,
  };
  const ss = options.scaleShift;
  const names = ss ? ["x", "gamma", "beta", "scale", "shift"] : ["x", "gamma", "beta"];
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const tensors = args.slice(0, -1) as tf.Tensor[];
    const inputs: tf.NamedTensorMap = {};
    names.forEach((name, i) => inputs[name] = tensors[i]);
    const [y, stats] = tf.engine().runKernel(FORWARD, inputs, attrs) as tf.Tensor[];
    save([...tensors, stats]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const grads: tf.NamedTensorMap = { dy, stats: saved[saved.length - 1] };
        names.forEach((name, i) => grads[name] = saved[i]);
        return tf.engine().runKernel(BACKWARD, grads, attrs) as tf.Tensor[];
      },
    };
  });
  const args = ss
    ? [x, affine.gamma, affine.beta, ss.scale, ss.shift]
    : [x, affine.gamma, affine.beta];
  return op(...args) as tf.Tensor4D;
}
