/**
 * The `sampler` section, `kind: "ddpm"`: ancestral sampling (Ho et al., Algorithm 2) as a step
 * rule for the one sampling loop of ./generate.ts (like a diffusers scheduler's `step`). A
 * sampler sees the network only as a function `denoise(x_t, t)` returning its raw output (ε̂ for
 * the default `eps` prediction; see ./targets.ts), and the schedule only as its tables.
 *
 * Steps are 0-based indices i = T-1..0 as in the notebook: the step at index i turns the
 * paper's x_{i+1} into x_i, so after it the state is x_t with t = i (t = T is x_T).
 * @module
 */
import type { SamplerConfig } from "../../schemas/experiment.ts";
import type { Rng } from "../rng.ts";
import { tf } from "../tf.ts";
import type { Schedule } from "./schedule.ts";
import { interpretOutput, noiseLevelAt, type Prediction } from "./targets.ts";

/**
 * What a denoiser returns: a tensor the sampling loop disposes, or the values of one (a
 * network run outside tfjs, such as ONNX Runtime), shaped like x_t.
 */
export type DenoiserOutput = tf.Tensor4D | Float32Array;

/**
 * The network as the samplers see it: its output for x_t [B, H, W, C] at float 0-based steps
 * t [B] (ε̂ when the model predicts `eps`), now or as a promise (a network whose batch is shared
 * with worker threads). A tensor output is a new tensor the sampler disposes; the denoiser keeps
 * its own intermediates in a tf.tidy. Wrappers (classifier-free guidance: two calls mixed) are
 * denoisers too.
 */
export type Denoiser = (
  x: tf.Tensor4D,
  t: tf.Tensor1D,
) => DenoiserOutput | Promise<DenoiserOutput>;

/** The flags of ancestral sampling (a subset of the `sampler` section). */
export type AncestralFlags =
  & Pick<SamplerConfig, "variance" | "initialNoise" | "stepNoise">
  & Partial<Pick<SamplerConfig, "clipX0">>;

/** Where the sampling loop is: the step just done (1-based) of how many. */
export interface StepProgress {
  /** Steps done, 1..steps (0 for the starting state). */
  step: number;
  /** Steps of the whole reverse process. */
  steps: number;
}

/**
 * Called with the t of a state (T for x_T, 0 for the sample), the state [B, H, W, C] and the
 * progress of the loop.
 */
export type StateCallback = (
  t: number,
  x: tf.Tensor4D,
  progress: StepProgress,
) => void | Promise<void>;

/** One step of a reverse process: from the state at `index` to the one at `prevIndex`. */
export interface StepInput {
  /** 0-based index i of the current state x (its t is i + 1). */
  index: number;
  /** The index of the next state, -1 after the last step (the sample, t = 0). */
  prevIndex: number;
  /** The step noise z, or null when the rule draws none for this step. */
  z: tf.Tensor4D | null;
}

/**
 * How a sampler turns the network output at x into the next state, as diffusers'
 * `scheduler.step`: DDPM and DDIM are step rules, driven by one loop over a list of timesteps.
 */
export interface StepRule {
  /** Whether the step from `index` to `prevIndex` draws step noise z (this fixes draw order). */
  drawsNoise(index: number, prevIndex: number): boolean;
  /** The next state from x and the network output at x. Pure: use inside tf.tidy. */
  step(output: tf.Tensor4D, x: tf.Tensor4D, input: StepInput): tf.Tensor4D;
}

/** The 0-based indices ancestral sampling visits from index `from` (default T - 1) down to 0. */
export function ddpmTimesteps(from: number): number[] {
  return Array.from({ length: from + 1 }, (_, k) => from - k);
}

/**
 * The t of every state a loop over `timesteps` (descending indices) passes through, the start
 * first and the sample (t = 0) last: the step at index i leads to t = (next index) + 1.
 */
export function visitedStates(timesteps: readonly number[]): number[] {
  if (timesteps.length === 0) return [0];
  return [...timesteps.map((i) => i + 1), 0];
}

/**
 * DDPM's step rule (Algorithm 2, one index at a time): the ε form of {@link ddpmStep}, or the
 * x̂_0 form {@link ddpmStepFromX0} for the `x0` and `v` predictions and with `clipX0`. The step
 * noise is drawn at every index but the last (i = 0), when step noise is on.
 */
export function ddpmRule(
  schedule: Schedule,
  options: {
    flags: Pick<AncestralFlags, "variance" | "stepNoise" | "clipX0">;
    prediction?: Prediction;
  },
): StepRule {
  const { flags } = options;
  const prediction = options.prediction ?? "eps";
  const viaX0 = prediction !== "eps" || flags.clipX0 === true;
  return {
    drawsNoise: (index) => flags.stepNoise && index > 0,
    step(output, x, { index, z }) {
      const step = { schedule, index, variance: flags.variance, z };
      if (!viaX0) return ddpmStep(x, output, step);
      const { x0 } = interpretOutput(output, x, {
        prediction,
        level: noiseLevelAt(schedule, index),
        clipX0: flags.clipX0,
      });
      return ddpmStepFromX0(x, x0, step);
    },
  };
}

/** σ_t² of the reverse step at index i: β̃_t (`posterior`) or β_t (`beta`). */
export function reverseVariance(
  schedule: Schedule,
  i: number,
  variance: SamplerConfig["variance"],
): number {
  return variance === "beta" ? schedule.betas[i] : schedule.posteriorVariance[i];
}

/**
 * The coefficients of the posterior mean μ̃(x_t, x_0) = x0 · x_0 + xt · x_t of
 * q(x_{t-1} | x_t, x_0) at index i: x0 = √ᾱ_{t-1} β_t / (1 - ᾱ_t),
 * xt = √α_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t). Its variance is `schedule.posteriorVariance[i]`.
 */
export function posteriorCoefficients(
  schedule: Schedule,
  index: number,
): { x0: number; xt: number } {
  const denom = 1 - schedule.alphaBars[index];
  return {
    x0: (Math.sqrt(schedule.alphaBarsPrev[index]) * schedule.betas[index]) / denom,
    xt: (Math.sqrt(schedule.alphas[index]) * (1 - schedule.alphaBarsPrev[index])) / denom,
  };
}

/** The posterior mean μ̃(x_t, x_0) of q(x_{t-1} | x_t, x_0) at index i; use inside tf.tidy. */
export function posteriorMean(
  x0: tf.Tensor4D,
  xt: tf.Tensor4D,
  options: { schedule: Schedule; index: number },
): tf.Tensor4D {
  const c = posteriorCoefficients(options.schedule, options.index);
  return tf.add(tf.mul(x0, c.x0), tf.mul(xt, c.xt));
}

/** The step of a reverse update: schedule, index, variance and the step noise z (null: none). */
export interface ReverseStepOptions {
  /** Noise schedule. */
  schedule: Schedule;
  /** Index i of x_t (0-based). */
  index: number;
  /** σ_t² = β̃_t (`posterior`) or β_t (`beta`). */
  variance: SamplerConfig["variance"];
  /** The step noise, or null when step noise is off. */
  z: tf.Tensor4D | null;
}

/** mean + σ_t z, except at the last step (i = 0) or without step noise. */
function withStepNoise(mean: tf.Tensor4D, options: ReverseStepOptions): tf.Tensor4D {
  if (options.z === null || options.index === 0) return mean;
  return tf.add(mean, tf.mul(options.z, ddpmSigma(options.schedule, options)));
}

/** σ_t, the scale of the step noise of the reverse step at `index`: 0 at the last one (i = 0). */
export function ddpmSigma(
  schedule: Schedule,
  options: { index: number; variance: SamplerConfig["variance"] },
): number {
  if (options.index === 0) return 0;
  return Math.sqrt(reverseVariance(schedule, options.index, options.variance));
}

/**
 * The coefficients of {@link ddpmStep}'s mean (x_t - eps · ε̂) / sqrtAlpha at index i:
 * eps = β_t / √(1 - ᾱ_t), sqrtAlpha = √α_t.
 */
export function ddpmEpsCoefficients(
  schedule: Schedule,
  index: number,
): { eps: number; sqrtAlpha: number } {
  return {
    eps: schedule.betas[index] / Math.sqrt(1 - schedule.alphaBars[index]),
    sqrtAlpha: Math.sqrt(schedule.alphas[index]),
  };
}

/**
 * One reverse step x_t -> x_{t-1} at index i:
 * x_{t-1} = (x_t - β_t / √(1 - ᾱ_t) ε̂) / √α_t + σ_t z, with z = 0 at the last step (i = 0).
 * `z` is the step noise, or null when step noise is off. Use inside tf.tidy.
 */
export function ddpmStep(
  x: tf.Tensor4D,
  eps: tf.Tensor4D,
  options: ReverseStepOptions,
): tf.Tensor4D {
  const c = ddpmEpsCoefficients(options.schedule, options.index);
  const mean: tf.Tensor4D = tf.div(tf.sub(x, tf.mul(eps, c.eps)), c.sqrtAlpha);
  return withStepNoise(mean, options);
}

/**
 * The same reverse step written with the predicted x̂_0: x_{t-1} = μ̃(x_t, x̂_0) + σ_t z (equal
 * to {@link ddpmStep} when x̂_0 comes from ε̂). Used for the `x0` and `v` predictions and with
 * `clipX0`. Use inside tf.tidy.
 */
export function ddpmStepFromX0(
  x: tf.Tensor4D,
  x0: tf.Tensor4D,
  options: ReverseStepOptions,
): tf.Tensor4D {
  const { schedule, index: i } = options;
  const mean = posteriorMean(x0, x, { schedule, index: i });
  return withStepNoise(mean, options);
}

/** x_T: zeros, or N(0, I) drawn from `rng` (the first draw of a sampler's stream). */
export function initialState(
  shape: [number, number, number, number],
  options: { initialNoise: SamplerConfig["initialNoise"]; rng: Rng },
): tf.Tensor4D {
  if (options.initialNoise === "zeros") return tf.zeros(shape);
  return tf.tensor4d(options.rng.normal(shape.reduce((a, b) => a * b, 1)), shape);
}
