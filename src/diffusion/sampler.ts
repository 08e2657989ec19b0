/**
 * The `sampler` section: DDPM ancestral sampling (Ho et al., Algorithm 2). The sampler sees the
 * network only as a function `denoise(x_t, t) -> ε̂`, and the schedule only as its tables.
 * @module
 */
import type { SamplerConfig } from "../../schemas/experiment.ts";
import type { Rng } from "../rng.ts";
import { tf } from "../tf.ts";
import type { Schedule } from "./schedule.ts";

/** A noise predictor: ε̂ = denoise(x_t, t) for x_t [B, H, W, C] and float steps t [B]. */
export type Denoiser = (x: tf.Tensor4D, t: tf.Tensor1D) => tf.Tensor4D;

/** The flags of ancestral sampling (a subset of the `sampler` section). */
export type AncestralFlags = Pick<SamplerConfig, "variance" | "initialNoise" | "stepNoise">;

/** σ_t² of the reverse step at index i: β̃_t (`posterior`) or β_t (`beta`). */
export function reverseVariance(
  schedule: Schedule,
  i: number,
  variance: SamplerConfig["variance"],
): number {
  return variance === "beta" ? schedule.betas[i] : schedule.posteriorVariance[i];
}

/**
 * One reverse step x_t -> x_{t-1} at index i:
 * x_{t-1} = (x_t - β_t / √(1 - ᾱ_t) ε̂) / √α_t + σ_t z, with z = 0 at the last step (i = 0).
 * `z` is the step noise, or null when step noise is off. Use inside tf.tidy.
 */
export function ddpmStep(
  x: tf.Tensor4D,
  eps: tf.Tensor4D,
  options: {
    schedule: Schedule;
    index: number;
    variance: SamplerConfig["variance"];
    z: tf.Tensor4D | null;
  },
): tf.Tensor4D {
  const { schedule, index: i } = options;
  const coef = schedule.betas[i] / Math.sqrt(1 - schedule.alphaBars[i]);
  const mean: tf.Tensor4D = tf.div(tf.sub(x, tf.mul(eps, coef)), Math.sqrt(schedule.alphas[i]));
  if (options.z === null || i === 0) return mean;
  const sigma = Math.sqrt(reverseVariance(schedule, i, options.variance));
  return tf.add(mean, tf.mul(options.z, sigma));
}

/** Options of {@link sampleDdpm}. */
export interface SampleOptions {
  /** [count, H, W, C] of the batch to generate. */
  shape: [number, number, number, number];
  /** Sampler flags. */
  flags: AncestralFlags;
  /** Generator of x_T and of the step noise z (the run's `sample/noise` stream). */
  rng: Rng;
  /** Start index (default T - 1) and optional start x (the recovery experiment starts from x_t). */
  start?: { index: number; x: tf.Tensor4D };
  /** Called after each step with the index just produced (i - 1 stands for x_{i}) and x. */
  onStep?: (index: number, x: tf.Tensor4D) => void | Promise<void>;
}

/**
 * Runs the reverse process from x_T (or `options.start`) down to x_0 and returns x_0.
 * Memory stays flat: each step runs in tf.tidy and the previous x is disposed.
 */
export async function sampleDdpm(
  denoise: Denoiser,
  schedule: Schedule,
  options: SampleOptions,
): Promise<tf.Tensor4D> {
  const { shape, flags, rng } = options;
  const n = shape.reduce((a, b) => a * b, 1);
  let index = options.start?.index ?? schedule.timesteps - 1;
  let x: tf.Tensor4D = options.start
    ? tf.clone(options.start.x)
    : flags.initialNoise === "zeros"
    ? tf.zeros(shape)
    : tf.tensor4d(rng.normal(n), shape);
  for (; index >= 0; index--) {
    const z = flags.stepNoise && index > 0 ? rng.normal(n) : null;
    const i = index;
    const next = tf.tidy(() => {
      const eps = denoise(x, tf.fill([shape[0]], i) as tf.Tensor1D);
      return ddpmStep(x, eps, {
        schedule,
        index: i,
        variance: flags.variance,
        z: z ? tf.tensor4d(z, shape) : null,
      });
    });
    x.dispose();
    x = next;
    if (options.onStep) await options.onStep(i, x);
  }
  return x;
}
