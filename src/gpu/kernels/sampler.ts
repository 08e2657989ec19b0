/**
 * The sampling kernels: one reverse step of DDPM (src/diffusion/sampler.ts) or DDIM
 * (src/diffusion/ddim.ts) for a whole batch, and classifier-free guidance's mix
 * (src/diffusion/guidance.ts), element-wise over n = B·H·W·C floats (NHWC, but the layout does
 * not matter: every element is independent).
 *
 * What changes from step to step (the schedule's coefficients at the step's index, σ) comes in
 * a small storage binding `hyper` that the host fills with {@link ddpmHyper} / {@link ddimHyper}
 * / {@link guidanceHyper} (or {@link samplerPlan} for a whole reverse process) and writes with
 * one writeBuffer per step, so one pipeline serves every step. What is fixed for a run (the
 * prediction target, clipX0, whether there is step noise at all) is baked into the kernel.
 * Each hyper value is the float32 rounding of the float64 number the tfjs step uploads as a
 * scalar, and each kernel applies the tfjs step's float32 operations in its order.
 *
 * The step noise z is drawn on the host, as the tfjs loop draws it (src/diffusion/generate.ts's
 * `reverseProcess`: `rng.normal(n)` before each step whose rule `drawsNoise`, after x_T), and
 * written to `z`. A step that draws none still reads `z` with σ = 0 in hyper (z must hold finite
 * values then, e.g. the last draw): mean + z · 0 is the mean. `out` must be another buffer than
 * `xt` (WebGPU forbids a writable binding aliasing a read one): ping-pong two state buffers.
 * @module
 */
import type { SamplerConfig } from "../../../schemas/experiment.ts";
import { ddimAlphaBar, ddimCoefficients } from "../../diffusion/ddim.ts";
import { type GenerateFlags, samplerRule, samplerTimesteps } from "../../diffusion/generate.ts";
import { guidanceWeights } from "../../diffusion/guidance.ts";
import { ddpmEpsCoefficients, ddpmSigma, posteriorCoefficients } from "../../diffusion/sampler.ts";
import type { Schedule } from "../../diffusion/schedule.ts";
import { noiseLevelAt, type Prediction } from "../../diffusion/targets.ts";
import { type Binding, declareBindings, type KernelSpec, linearWorkgroups } from "../kernel.ts";

/** Threads per workgroup of every kernel here. */
export const WORKGROUP_SIZE = 256;

/**
 * The length of {@link ddpmStep}'s `hyper`:
 * `[epsCoef, sqrtAlpha, signal, noise, meanX0, meanXt, sigma, 0]` = β_t / √(1 - ᾱ_t), √α_t,
 * √ᾱ_t, √(1 - ᾱ_t), the posterior mean's coefficients of x̂_0 and x_t, and σ_t (0 at the last
 * step, index 0). The ε form reads [0, 1, 6]; the x̂_0 form [2, 3, 4, 5, 6].
 */
export const DDPM_HYPER_LENGTH = 8;

/**
 * The length of {@link ddimStep}'s `hyper`: `[signal, noise, signalPrev, direction, sigma, 0, 0,
 * 0]` = √ᾱ, √(1 - ᾱ) of the current index, √ᾱ' of the next one (ᾱ' = 1 after the last step),
 * √max(0, 1 - ᾱ' - σ²) and σ (ddim.ts's `ddimCoefficients`).
 */
export const DDIM_HYPER_LENGTH = 8;

/** The length of {@link guidanceCombine}'s `hyper`: `[1 + w, w]`. */
export const GUIDANCE_HYPER_LENGTH = 2;

/** The size of a sampling kernel: n = B·H·W·C floats of the batch. */
export interface SamplerShape {
  /** Number of floats of x_t (and of the model output, z and out). */
  n: number;
}

/** What is fixed for a whole reverse process (baked into the kernel). */
export interface StepKernelOptions {
  /** What the model output `eps` is (`model.prediction`; default `eps`). */
  prediction?: Prediction;
  /** Clip x̂_0 to [-1, 1] (`sampler.clipX0`; default false). */
  clipX0?: boolean;
  /** Whether there is step noise at all (`sampler.stepNoise`; default true): false drops `z`. */
  stepNoise?: boolean;
}

/** The bindings of a step kernel. */
function stepBindings(n: number, options: StepKernelOptions, hyper: number): Binding[] {
  return [
    { name: "xt", access: "read", length: n },
    { name: "eps", access: "read", length: n },
    ...(options.stepNoise === false ? [] : [{ name: "z", access: "read" as const, length: n }]),
    { name: "hyper", access: "read", length: hyper },
    { name: "out", access: "read_write", length: n },
  ];
}

/** The WGSL around an element-wise body that defines `mean` from `x` (xt) and `o` (model output). */
function stepKernel(
  name: string,
  bindings: Binding[],
  options: { n: number; body: string; noiseAt: number },
): KernelSpec {
  const { n } = options;
  const workgroups = linearWorkgroups(n, WORKGROUP_SIZE);
  const noise = bindings.some((b) => b.name === "z");
  return {
    name,
    bindings,
    workgroups,
    code: `${declareBindings(bindings)}
@compute @workgroup_size(${WORKGROUP_SIZE})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x + gid.y * ${workgroups[0] * WORKGROUP_SIZE}u;
  if (i >= ${n}u) { return; }
  let x = xt[i];
  let o = eps[i];
${options.body}
  out[i] = ${noise ? `mean + z[i] * hyper[${options.noiseAt}]` : "mean"};
}
`,
  };
}

/**
 * WGSL of targets.ts's `interpretOutput` with noise level a = hyper[signal], s = hyper[noise]:
 * defines `x0` and, when `withEps`, `e` (ε̂), from `x` and `o`.
 */
function interpretWgsl(
  options: StepKernelOptions,
  at: { signal: number; noise: number; withEps: boolean },
): string {
  const a = `hyper[${at.signal}]`;
  const s = `hyper[${at.noise}]`;
  const prediction = options.prediction ?? "eps";
  const [x0, e] = prediction === "eps"
    ? [`(x - o * ${s}) / ${a}`, `o`]
    : prediction === "x0"
    ? [`o`, `(x - o * ${a}) / ${s}`]
    : [`x * ${a} - o * ${s}`, `x * ${s} + o * ${a}`];
  if (options.clipX0) {
    const clipped = `  let x0 = clamp(${x0}, -1.0, 1.0);`;
    return at.withEps ? `${clipped}\n  let e = (x - x0 * ${a}) / ${s};` : clipped;
  }
  return at.withEps ? `  let x0 = ${x0};\n  let e = ${e};` : `  let x0 = ${x0};`;
}

/**
 * One DDPM reverse step (sampler.ts's `ddpmRule`) at the index whose {@link ddpmHyper} is in
 * `hyper`: with the `eps` prediction and no clipping its ε form
 * mean = (x_t - epsCoef · ε̂) / √α_t (`ddpmStep`), else the x̂_0 form
 * mean = meanX0 · x̂_0 + meanXt · x_t (`ddpmStepFromX0`, x̂_0 from targets.ts's
 * `interpretOutput`, clipped with `clipX0`); out = mean + σ z. The variance (β or β̃) is only
 * σ, so it is the host's choice ({@link ddpmHyper}), not the kernel's.
 *
 * Bindings: `xt` (read, n), `eps` (read, n: the raw model output, ε̂, x̂_0 or v̂ by
 * `prediction`), `z` (read, n; absent with `stepNoise: false`), `hyper` (read,
 * {@link DDPM_HYPER_LENGTH}), `out` (read_write, n: x_{t-1}).
 */
export function ddpmStep(shape: SamplerShape, options: StepKernelOptions = {}): KernelSpec {
  const viaX0 = (options.prediction ?? "eps") !== "eps" || options.clipX0 === true;
  const body = viaX0
    ? `${interpretWgsl(options, { signal: 2, noise: 3, withEps: false })}
  let mean = x0 * hyper[4] + x * hyper[5];`
    : `  let mean = (x - o * hyper[0]) / hyper[1];`;
  return stepKernel(
    `sampler.ddpm.${options.prediction ?? "eps"}${options.clipX0 ? ".clip" : ""}`,
    stepBindings(shape.n, options, DDPM_HYPER_LENGTH),
    { n: shape.n, body, noiseAt: 6 },
  );
}

/**
 * One DDIM step (ddim.ts's `ddimRule`) at the index whose {@link ddimHyper} is in `hyper`:
 * ε̂ and x̂_0 from targets.ts's `interpretOutput` (clipped with `clipX0`), then
 * out = signalPrev · x̂_0 + direction · ε̂ + σ z (`ddimStep`). η is only in σ and direction, so
 * it is the host's ({@link ddimHyper}). Bindings as {@link ddpmStep}'s, `hyper` of
 * {@link DDIM_HYPER_LENGTH}.
 */
export function ddimStep(shape: SamplerShape, options: StepKernelOptions = {}): KernelSpec {
  const body = `${interpretWgsl(options, { signal: 0, noise: 1, withEps: true })}
  let mean = x0 * hyper[2] + e * hyper[3];`;
  return stepKernel(
    `sampler.ddim.${options.prediction ?? "eps"}${options.clipX0 ? ".clip" : ""}`,
    stepBindings(shape.n, options, DDIM_HYPER_LENGTH),
    { n: shape.n, body, noiseAt: 4 },
  );
}

/** float32 rounding of each step, as WGSL's f32 (and tfjs's Float32Array results) round. */
const r = Math.fround;

/** The inputs of a step reference: x_t, the model output and (with step noise) z. */
export interface StepInputs {
  /** x_t. */
  xt: Float32Array;
  /** The raw model output. */
  eps: Float32Array;
  /** The step noise (absent: `stepNoise: false`). */
  z?: Float32Array;
}

/** targets.ts's `interpretOutput` of one element in float32: [x̂_0, ε̂]. */
function interpretRef(
  x: number,
  o: number,
  options: StepKernelOptions & { a: number; s: number },
): [number, number] {
  const { a, s } = options;
  const prediction = options.prediction ?? "eps";
  let x0: number;
  let e: number;
  if (prediction === "eps") {
    x0 = r(r(x - r(o * s)) / a);
    e = o;
  } else if (prediction === "x0") {
    x0 = o;
    e = r(r(x - r(o * a)) / s);
  } else {
    x0 = r(r(x * a) - r(o * s));
    e = r(r(x * s) + r(o * a));
  }
  if (options.clipX0) {
    x0 = Math.min(Math.max(x0, -1), 1);
    e = r(r(x - r(x0 * a)) / s);
  }
  return [x0, e];
}

/** {@link ddpmStep} in float32 on the host: x_{t-1}. */
export function ddpmStepRef(
  inputs: StepInputs,
  hyper: Float32Array,
  options: StepKernelOptions = {},
): Float32Array<ArrayBuffer> {
  const viaX0 = (options.prediction ?? "eps") !== "eps" || options.clipX0 === true;
  const [epsCoef, sqrtAlpha, a, s, meanX0, meanXt, sigma] = hyper;
  const out = new Float32Array(inputs.xt.length);
  for (let i = 0; i < out.length; i++) {
    const x = inputs.xt[i];
    const o = inputs.eps[i];
    let mean: number;
    if (viaX0) {
      const [x0] = interpretRef(x, o, { ...options, a, s });
      mean = r(r(x0 * meanX0) + r(x * meanXt));
    } else mean = r(r(x - r(o * epsCoef)) / sqrtAlpha);
    out[i] = inputs.z ? r(mean + r(inputs.z[i] * sigma)) : mean;
  }
  return out;
}

/** {@link ddimStep} in float32 on the host: the next state. */
export function ddimStepRef(
  inputs: StepInputs,
  hyper: Float32Array,
  options: StepKernelOptions = {},
): Float32Array<ArrayBuffer> {
  const [a, s, signalPrev, direction, sigma] = hyper;
  const out = new Float32Array(inputs.xt.length);
  for (let i = 0; i < out.length; i++) {
    const x = inputs.xt[i];
    const [x0, e] = interpretRef(x, inputs.eps[i], { ...options, a, s });
    const mean = r(r(x0 * signalPrev) + r(e * direction));
    out[i] = inputs.z ? r(mean + r(inputs.z[i] * sigma)) : mean;
  }
  return out;
}

/**
 * {@link ddpmStep}'s `hyper` for the step at 0-based `index` with σ_t² = β_t or β̃_t
 * (`variance`): sampler.ts's `ddpmEpsCoefficients`, targets.ts's `noiseLevelAt`,
 * `posteriorCoefficients` and `ddpmSigma`.
 */
export function ddpmHyper(
  schedule: Schedule,
  options: { index: number; variance: SamplerConfig["variance"] },
): Float32Array<ArrayBuffer> {
  const { index } = options;
  const c = ddpmEpsCoefficients(schedule, index);
  const level = noiseLevelAt(schedule, index);
  const mean = posteriorCoefficients(schedule, index);
  return Float32Array.from([
    c.eps,
    c.sqrtAlpha,
    level.signal,
    level.noise,
    mean.x0,
    mean.xt,
    ddpmSigma(schedule, options),
    0,
  ]);
}

/**
 * {@link ddimStep}'s `hyper` for the step from 0-based `index` to `prevIndex` (-1 after the
 * last step) with parameter `eta`: targets.ts's `noiseLevelAt` and ddim.ts's `ddimCoefficients`.
 */
export function ddimHyper(
  schedule: Schedule,
  options: { index: number; prevIndex: number; eta: number },
): Float32Array<ArrayBuffer> {
  const level = noiseLevelAt(schedule, options.index);
  const c = ddimCoefficients(
    ddimAlphaBar(schedule, options.index),
    ddimAlphaBar(schedule, options.prevIndex),
    options,
  );
  return Float32Array.from([level.signal, level.noise, c.signal, c.direction, c.sigma, 0, 0, 0]);
}

/**
 * Classifier-free guidance's mix (guidance.ts's `guidanceMix`):
 * out = cond · hyper[0] - uncond · hyper[1] ({@link guidanceHyper}: [1 + w, w]). Bindings:
 * `cond` (read, n), `uncond` (read, n), `hyper` (read, {@link GUIDANCE_HYPER_LENGTH}), `out`
 * (read_write, n). The same mix serves ε, x_0 and v outputs.
 */
export function guidanceCombine(n: number): KernelSpec {
  const bindings: Binding[] = [
    { name: "cond", access: "read", length: n },
    { name: "uncond", access: "read", length: n },
    { name: "hyper", access: "read", length: GUIDANCE_HYPER_LENGTH },
    { name: "out", access: "read_write", length: n },
  ];
  const workgroups = linearWorkgroups(n, WORKGROUP_SIZE);
  return {
    name: "sampler.guidance",
    bindings,
    workgroups,
    code: `${declareBindings(bindings)}
@compute @workgroup_size(${WORKGROUP_SIZE})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x + gid.y * ${workgroups[0] * WORKGROUP_SIZE}u;
  if (i >= ${n}u) { return; }
  out[i] = cond[i] * hyper[0] - uncond[i] * hyper[1];
}
`,
  };
}

/** {@link guidanceCombine} in float32 on the host. */
export function guidanceCombineRef(
  inputs: { cond: Float32Array; uncond: Float32Array },
  hyper: Float32Array,
): Float32Array<ArrayBuffer> {
  const out = new Float32Array(inputs.cond.length);
  for (let i = 0; i < out.length; i++) {
    out[i] = r(r(inputs.cond[i] * hyper[0]) - r(inputs.uncond[i] * hyper[1]));
  }
  return out;
}

/** {@link guidanceCombine}'s `hyper` for weight w (guidance.ts's `guidanceWeights`). */
export function guidanceHyper(w: number): Float32Array<ArrayBuffer> {
  const c = guidanceWeights(w);
  return Float32Array.from([c.conditional, c.unconditional]);
}

/** One step of a reverse process as the engine runs it. */
export interface PlannedStep {
  /** 0-based index of the current state (the model's t). */
  index: number;
  /** Index of the next state, -1 after the last step. */
  prevIndex: number;
  /** Whether the host draws z (`rng.normal(n)`) before this step, as the tfjs loop does. */
  drawsNoise: boolean;
  /** The step kernel's `hyper`. */
  hyper: Float32Array<ArrayBuffer>;
}

/**
 * Every step of the reverse process the `sampler` section describes (generate.ts's
 * `samplerTimesteps` and `samplerRule(...).drawsNoise`), with each step's hyper: ddpm's
 * {@link ddpmHyper} or ddim's {@link ddimHyper}. x_T is drawn before the first step (unless
 * `initialNoise: "zeros"`), as generate.ts's `initialState`.
 */
export function samplerPlan(
  schedule: Schedule,
  options: { sampler: GenerateFlags; prediction?: Prediction },
): PlannedStep[] {
  const { sampler } = options;
  const rule = samplerRule(schedule, options);
  const timesteps = samplerTimesteps(sampler, schedule.timesteps);
  return timesteps.map((index, k) => {
    const prevIndex = k + 1 < timesteps.length ? timesteps[k + 1] : -1;
    return {
      index,
      prevIndex,
      drawsNoise: rule.drawsNoise(index, prevIndex),
      hyper: sampler.kind === "ddim"
        ? ddimHyper(schedule, { index, prevIndex, eta: sampler.eta })
        : ddpmHyper(schedule, { index, variance: sampler.variance }),
    };
  });
}

/**
 * The step kernel of the `sampler` section: {@link ddpmStep} or {@link ddimStep}, without `z`
 * when no step draws noise (`stepNoise: false`, or ddim with η = 0).
 */
export function samplerStep(
  shape: SamplerShape,
  options: { sampler: GenerateFlags; prediction?: Prediction },
): KernelSpec {
  const { sampler } = options;
  const flags: StepKernelOptions = {
    prediction: options.prediction,
    clipX0: sampler.clipX0,
    stepNoise: sampler.stepNoise && (sampler.kind !== "ddim" || sampler.eta > 0),
  };
  return sampler.kind === "ddim" ? ddimStep(shape, flags) : ddpmStep(shape, flags);
}
