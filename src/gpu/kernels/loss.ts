/**
 * The training objective on the GPU (Algorithm 1 of DDPM): the forward-process sample
 * x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε, the network's target (ε, x_0 or v as src/diffusion/targets.ts),
 * and the mean loss of src/train/loss.ts with its gradient, reduced in a fixed order.
 *
 * The per-example coefficients come from the host ({@link qSampleCoefficients}: the float32
 * values src/diffusion/forward.ts `gatherCoefficients` makes), so the kernels need no schedule.
 * References follow ./elementwise.ts: inputs and outputs by binding name, computed in float64.
 * @module
 */
import type { LossConfig } from "../../../schemas/experiment.ts";
import type { Schedule } from "../../diffusion/schedule.ts";
import { f32, type KernelSpec } from "../kernel.ts";
import {
  declare,
  type GradOptions,
  input,
  output,
  pointwiseKernel,
  store,
  type Values,
  WORKGROUP_SIZE,
} from "./elementwise.ts";

/** A batch of examples of `size` = H · W · C values each. */
export interface SampleShape {
  /** B. */
  batch: number;
  /** Values per example (H · W · C). */
  size: number;
}

/**
 * The `coef` binding [B·2] of example steps (0-based): `coef[2b] = √ᾱ_t`, `coef[2b + 1] =
 * √(1 - ᾱ_t)`, each the float32 rounding of the float64 value, as forward.ts gathers them.
 */
export function qSampleCoefficients(
  schedule: Schedule,
  steps: ArrayLike<number>,
): Float32Array<ArrayBuffer> {
  const out = new Float32Array(2 * steps.length);
  for (let b = 0; b < steps.length; b++) {
    const alphaBar = schedule.alphaBars[steps[b]];
    out[2 * b] = Math.sqrt(alphaBar);
    out[2 * b + 1] = Math.sqrt(1 - alphaBar);
  }
  return out;
}

function checkShape(name: string, shape: SampleShape): void {
  for (const [key, v] of Object.entries(shape)) {
    if (typeof v === "number" && !(Number.isInteger(v) && v > 0)) {
      throw new RangeError(`${name}: ${key} must be a positive integer, got ${v}`);
    }
  }
}

/**
 * x_t = a · x_0 + s · ε with (a, s) = coef[2b], coef[2b + 1] (forward.ts `qSample`); bindings
 * `x0`, `noise` [B·size], `coef` [B·2] -> `xt` [B·size].
 */
export function qSample(shape: SampleShape): KernelSpec {
  checkShape("qSample", shape);
  const { batch, size } = shape;
  const n = batch * size;
  return pointwiseKernel("qSample", {
    n,
    bindings: [input("x0", n), input("noise", n), input("coef", 2 * batch), output("xt", n)],
    body: `let b = i / ${size}u;
  xt[i] = coef[2u * b] * x0[i] + coef[2u * b + 1u] * noise[i];`,
  });
}

/** Reference of {@link qSample}. */
export function qSampleRef(
  inputs: { x0: Values; noise: Values; coef: Values },
  shape: SampleShape,
): { xt: Float64Array } {
  const { x0, noise, coef } = inputs;
  const xt = new Float64Array(x0.length);
  for (let i = 0; i < xt.length; i++) {
    const b = Math.floor(i / shape.size);
    xt[i] = coef[2 * b] * x0[i] + coef[2 * b + 1] * noise[i];
  }
  return { xt };
}

/** What the network predicts (`model.prediction`). */
export type TargetKind = "eps" | "x0" | "v";

/** Shape of {@link diffusionTarget}. */
export interface TargetShape extends SampleShape {
  /** ε, x_0, or v = a ε - s x_0 (targets.ts `trainingTarget`). */
  target: TargetKind;
}

/**
 * The training target into `target` [B·size]. Bindings by kind (only what it reads, since an
 * unused binding would not be in the pipeline's layout): `eps`: `noise` -> `target`; `x0`:
 * `x0` -> `target`; `v`: `x0`, `noise`, `coef` [B·2] -> `target` = coef[2b] ε - coef[2b+1] x_0.
 * (For eps and x0 the engine may as well bind the buffer itself; this is a copy.)
 */
export function diffusionTarget(shape: TargetShape): KernelSpec {
  checkShape("diffusionTarget", shape);
  const { batch, size, target: kind } = shape;
  const n = batch * size;
  const name = `diffusionTarget.${kind}`;
  if (kind === "eps" || kind === "x0") {
    const src = kind === "eps" ? "noise" : "x0";
    return pointwiseKernel(name, {
      n,
      bindings: [input(src, n), output("target", n)],
      body: `target_[i] = ${src}[i];`,
    });
  }
  return pointwiseKernel(name, {
    n,
    bindings: [input("x0", n), input("noise", n), input("coef", 2 * batch), output("target", n)],
    body: `let b = i / ${size}u;
  target_[i] = noise[i] * coef[2u * b] - x0[i] * coef[2u * b + 1u];`,
  });
}

/** Reference of {@link diffusionTarget}. */
export function diffusionTargetRef(
  inputs: { x0?: Values; noise?: Values; coef?: Values },
  shape: TargetShape,
): { target: Float64Array } {
  const { x0, noise, coef } = inputs;
  if (shape.target === "eps") return { target: Float64Array.from(noise!) };
  if (shape.target === "x0") return { target: Float64Array.from(x0!) };
  const target = new Float64Array(x0!.length);
  for (let i = 0; i < target.length; i++) {
    const b = Math.floor(i / shape.size);
    target[i] = noise![i] * coef![2 * b] - x0![i] * coef![2 * b + 1];
  }
  return { target };
}

/** The loss kinds of the `loss` section. */
export type LossKind = LossConfig["kind"];

/** Shape of {@link lossForward}. */
export interface LossShape {
  /** Elements of `pred` and `target` (the whole batch). */
  n: number;
  /** l1: mean |d|; l2: mean d²; huber: mean of 0.5 q² + delta (|d| - q), q = min(|d|, delta). */
  kind: LossKind;
  /** Huber's delta (default 1, the schema's). */
  delta?: number;
}

/** Options of {@link lossForward}. */
export interface LossOptions extends GradOptions {
  /** Entries of the `loss` ring buffer (default 1); the kernel writes `loss[slot % ring]`. */
  ring?: number;
  /**
   * Multiplier of the loss and its gradient (default 1): a micro-batch's share of the step's
   * batch, as src/train/step.ts weights each piece.
   */
  weight?: number;
  /** Elements per thread of the first pass, at least (default 4; tests use less). */
  perThread?: number;
}

/** Most workgroups of the first pass of {@link lossForward} (so the second has ≤ 4 per thread). */
export const LOSS_PARTIALS = 1024;

function lossTerms(kind: LossKind, delta: number, gradScale: string): string {
  switch (kind) {
    case "l1":
      // tfjs's abs gradient is step(d, -1): +1 above 0, -1 at and below 0.
      return `let value = abs(d);
    let grad = select(-${gradScale}, ${gradScale}, d > 0.0);`;
    case "l2":
      return `let value = d * d;
    let grad = ${gradScale} * (2.0 * d);`;
    case "huber":
      return `let a = abs(d);
    let q = min(a, ${f32(delta)});
    let value = (q * q) * 0.5 + (a - q) * ${f32(delta)};
    let grad = ${gradScale} * clamp(d, -${f32(delta)}, ${f32(delta)});`;
  }
}

/**
 * The mean loss of `pred` against `target` and its gradient, in two passes (run them in order):
 *
 * 1. `loss.partials`: bindings `pred`, `target` [n] -> `dpred` [n] (the gradient of
 *    weight · mean loss: l1 ±weight/n, -weight/n at d = 0 as tfjs; l2 2 d weight/n; huber
 *    clip(d, ±delta) weight/n; accumulates with `accumulate`), `tmp` [G] (scratch the engine
 *    allocates: workgroup g's partial sum, threads striding by G·256 in order then a tree).
 *    G = min(⌈n / (256 · perThread)⌉, {@link LOSS_PARTIALS}).
 * 2. `loss.finish`: one workgroup; bindings `tmp` [G], `slot` [1] (u32 the host writes each
 *    step) -> `loss` [ring]: `loss[slot % ring] = weight · Σ tmp / n` (fixed order).
 *
 * One pipeline per pass serves every step; the loss stays on the device until read back.
 */
export function lossForward(shape: LossShape, options: LossOptions = {}): KernelSpec[] {
  const { n, kind } = shape;
  const delta = shape.delta ?? 1;
  const ring = options.ring ?? 1;
  const weight = options.weight ?? 1;
  const perThread = options.perThread ?? 4;
  for (const [key, v] of Object.entries({ n, ring, perThread })) {
    if (!(Number.isInteger(v) && v > 0)) {
      throw new RangeError(`loss: ${key} must be a positive integer, got ${v}`);
    }
  }
  if (!(delta > 0) || !(weight > 0)) throw new RangeError("loss: delta and weight must be > 0");
  const groups = Math.min(Math.ceil(n / (WORKGROUP_SIZE * perThread)), LOSS_PARTIALS);
  const size = WORKGROUP_SIZE;
  const tree = `part[li] = acc;
  workgroupBarrier();
  for (var s = ${size / 2}u; s > 0u; s = s >> 1u) {
    if (li < s) { part[li] = part[li] + part[li + s]; }
    workgroupBarrier();
  }`;
  const partials = [
    input("pred", n),
    input("target", n),
    output("dpred", n),
    output("tmp", groups),
  ];
  const first: KernelSpec = {
    name: `loss.${kind}.partials`,
    bindings: partials,
    workgroups: [groups, 1, 1],
    code: `${declare(partials)}
var<workgroup> part: array<f32, ${size}>;
@compute @workgroup_size(${size})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  var acc = 0.0;
  for (var i = wg.x * ${size}u + li; i < ${n}u; i = i + ${groups * size}u) {
    let d = pred[i] - target_[i];
    ${lossTerms(kind, delta, f32(weight / n))}
    acc = acc + value;
    ${store("dpred[i]", "grad", options)}
  }
  ${tree}
  if (li == 0u) { tmp[wg.x] = part[0]; }
}
`,
  };
  const last = [input("tmp", groups), input("slot", 1), output("loss", ring)];
  const finish: KernelSpec = {
    name: `loss.${kind}.finish`,
    bindings: last,
    workgroups: [1, 1, 1],
    code: `${declare(last, ["slot"])}
var<workgroup> part: array<f32, ${size}>;
@compute @workgroup_size(${size})
fn main(@builtin(local_invocation_index) li: u32) {
  var acc = 0.0;
  for (var j = li; j < ${groups}u; j = j + ${size}u) { acc = acc + tmp[j]; }
  ${tree}
  if (li == 0u) {
    loss[slot[0] % ${ring}u] = (part[0] * ${f32(1 / n)})${weight === 1 ? "" : ` * ${f32(weight)}`};
  }
}
`,
  };
  return [first, finish];
}

/** Reference of {@link lossForward}: the weighted mean loss and `dpred`. */
export function lossForwardRef(
  inputs: { pred: Values; target: Values },
  options: LossShape & { weight?: number },
): { loss: number; dpred: Float64Array } {
  const { pred, target } = inputs;
  const n = pred.length;
  const delta = options.delta ?? 1;
  const weight = options.weight ?? 1;
  const dpred = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const d = pred[i] - target[i];
    const a = Math.abs(d);
    switch (options.kind) {
      case "l1":
        sum += a;
        dpred[i] = d > 0 ? 1 : -1;
        break;
      case "l2":
        sum += d * d;
        dpred[i] = 2 * d;
        break;
      case "huber": {
        const q = Math.min(a, delta);
        sum += 0.5 * q * q + delta * (a - q);
        dpred[i] = Math.max(-delta, Math.min(delta, d));
        break;
      }
    }
    dpred[i] *= weight / n;
  }
  return { loss: weight * sum / n, dpred };
}
