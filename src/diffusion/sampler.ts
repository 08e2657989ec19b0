/**
 * The `sampler` section, `kind: "ddpm"`: ancestral sampling (Ho et al., Algorithm 2). The
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
 * The network as the samplers see it: its output for x_t [B, H, W, C] at float 0-based steps
 * t [B] (ε̂ when the model predicts `eps`), now or as a promise (a network whose batch is shared
 * with worker threads). The output is a new tensor the sampler disposes; the denoiser keeps its
 * own intermediates in a tf.tidy.
 */
export type Denoiser = (
  x: tf.Tensor4D,
  t: tf.Tensor1D,
) => tf.Tensor4D | Promise<tf.Tensor4D>;

/** The flags of ancestral sampling (a subset of the `sampler` section). */
export type AncestralFlags =
  & Pick<SamplerConfig, "variance" | "initialNoise" | "stepNoise">
  & Partial<Pick<SamplerConfig, "clipX0">>;

/** Called with the t of a state (T for x_T, 0 for the sample) and the state [B, H, W, C]. */
export type StateCallback = (t: number, x: tf.Tensor4D) => void | Promise<void>;

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
  const sigma = Math.sqrt(reverseVariance(options.schedule, options.index, options.variance));
  return tf.add(mean, tf.mul(options.z, sigma));
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
  const { schedule, index: i } = options;
  const coef = schedule.betas[i] / Math.sqrt(1 - schedule.alphaBars[i]);
  const mean: tf.Tensor4D = tf.div(tf.sub(x, tf.mul(eps, coef)), Math.sqrt(schedule.alphas[i]));
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

/** Options of {@link sampleDdpm}. */
export interface SampleOptions {
  /** [count, H, W, C] of the batch to generate. */
  shape: [number, number, number, number];
  /** Sampler flags. */
  flags: AncestralFlags;
  /** What the denoiser outputs (default `eps`). */
  prediction?: Prediction;
  /** Generator of x_T and of the step noise z (the run's `sample/noise` stream). */
  rng: Rng;
  /** Start index (default T - 1) and optional start x (the recovery experiment starts from x_t). */
  start?: { index: number; x: tf.Tensor4D };
  /** Called once with the starting state: t = T (or start.index + 1) and x_t. */
  onStart?: StateCallback;
  /** Called after each step with its index i and the new state x (the paper's x_i). */
  onStep?: (index: number, x: tf.Tensor4D) => void | Promise<void>;
}

/**
 * Runs the reverse process from x_T (or `options.start`) down to x_0 and returns x_0.
 * Draws, in order: x_T (gaussian, unless `start` is given), then z of each step with index > 0
 * (when step noise is on). Memory stays flat: each step runs in tf.tidy and the previous x is
 * disposed.
 */
export async function sampleDdpm(
  denoise: Denoiser,
  schedule: Schedule,
  options: SampleOptions,
): Promise<tf.Tensor4D> {
  const { shape, flags, rng } = options;
  const prediction = options.prediction ?? "eps";
  const viaX0 = prediction !== "eps" || flags.clipX0 === true;
  const n = shape.reduce((a, b) => a * b, 1);
  let index = options.start?.index ?? schedule.timesteps - 1;
  let x: tf.Tensor4D = options.start
    ? tf.clone(options.start.x)
    : initialState(shape, { initialNoise: flags.initialNoise, rng });
  if (options.onStart) await options.onStart(index + 1, x);
  for (; index >= 0; index--) {
    const z = flags.stepNoise && index > 0 ? rng.normal(n) : null;
    const i = index;
    const t = tf.fill([shape[0]], i) as tf.Tensor1D;
    const out = await denoise(x, t);
    const next = tf.tidy(() => {
      const step = {
        schedule,
        index: i,
        variance: flags.variance,
        z: z ? tf.tensor4d(z, shape) : null,
      };
      if (!viaX0) return ddpmStep(x, out, step);
      const { x0 } = interpretOutput(out, x, {
        prediction,
        level: noiseLevelAt(schedule, i),
        clipX0: flags.clipX0,
      });
      return ddpmStepFromX0(x, x0, step);
    });
    tf.dispose([t, out]);
    x.dispose();
    x = next;
    if (options.onStep) await options.onStep(i, x);
  }
  return x;
}
