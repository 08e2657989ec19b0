/**
 * The `sampler` section, `kind: "ddim"`: DDIM (Song, Meng & Ermon, 2021), which samples a model
 * trained with T steps on a subsequence τ_1 < ... < τ_S of its timesteps, so a T = 1000 model
 * samples in 50 or 100 steps. With η = 0 the process is deterministic given x_T.
 *
 * From the state at step index τ (noise level ᾱ = ᾱ_τ) to the previous one τ' (ᾱ' = ᾱ_τ', with
 * ᾱ' = 1 after the last step):
 * x' = √ᾱ' x̂_0 + √(1 - ᾱ' - σ²) ε̂ + σ z,  σ = η √((1 - ᾱ') / (1 - ᾱ)) √(1 - ᾱ / ᾱ').
 * With S = T and η = 1, σ² is the posterior variance β̃ and the step is DDPM's.
 * @module
 */
import type { SamplerConfig } from "../../schemas/experiment.ts";
import type { Rng } from "../rng.ts";
import { tf } from "../tf.ts";
import { type Denoiser, initialState, type StateCallback } from "./sampler.ts";
import type { Schedule } from "./schedule.ts";
import { type Denoised, interpretOutput, noiseLevelAt, type Prediction } from "./targets.ts";

/**
 * The 0-based step indices DDIM visits, ascending: τ_k = round(k T / S) - 1 for k = 1..S
 * ("trailing" spacing: the first step is always at T - 1, where x_T is pure noise, and S = T
 * gives every index).
 */
export function ddimTimesteps(timesteps: number, steps: number): Int32Array {
  if (!(steps >= 1 && steps <= timesteps && Number.isInteger(steps))) {
    throw new RangeError(`ddim steps must be an integer in [1, ${timesteps}], got ${steps}`);
  }
  return Int32Array.from(
    { length: steps },
    (_, k) => Math.round(((k + 1) * timesteps) / steps) - 1,
  );
}

/** The t of every state DDIM passes through, x_T first: [T, τ_{S-1} + 1, ..., τ_1 + 1, 0]. */
export function ddimVisited(timesteps: number, steps: number): number[] {
  const tau = ddimTimesteps(timesteps, steps);
  const out = [timesteps];
  for (let k = tau.length - 1; k >= 1; k--) out.push(tau[k - 1] + 1);
  out.push(0);
  return out;
}

/** σ of a DDIM step from noise level ᾱ to ᾱ' with parameter η (0 when ᾱ' = 1). */
export function ddimSigma(
  alphaBar: number,
  alphaBarPrev: number,
  options: { eta: number },
): number {
  return options.eta *
    Math.sqrt(((1 - alphaBarPrev) / (1 - alphaBar)) * (1 - alphaBar / alphaBarPrev));
}

/** One DDIM step from ε̂ and x̂_0 to the previous state; `z` null means no noise. Use in tf.tidy. */
export function ddimStep(
  prediction: Denoised,
  options: { alphaBar: number; alphaBarPrev: number; eta: number; z: tf.Tensor4D | null },
): tf.Tensor4D {
  const { alphaBar, alphaBarPrev } = options;
  const sigma = ddimSigma(alphaBar, alphaBarPrev, options);
  const direction = Math.sqrt(Math.max(0, 1 - alphaBarPrev - sigma * sigma));
  const mean: tf.Tensor4D = tf.add(
    tf.mul(prediction.x0, Math.sqrt(alphaBarPrev)),
    tf.mul(prediction.eps, direction),
  );
  return options.z === null || sigma === 0 ? mean : tf.add(mean, tf.mul(options.z, sigma));
}

/** The flags of DDIM sampling (a subset of the `sampler` section). */
export type DdimFlags =
  & Pick<SamplerConfig, "initialNoise" | "stepNoise" | "eta">
  & Partial<Pick<SamplerConfig, "clipX0" | "steps">>;

/** Options of {@link sampleDdim}. */
export interface DdimOptions {
  /** [count, H, W, C] of the batch to generate. */
  shape: [number, number, number, number];
  /** Sampler flags; `steps` defaults to T. */
  flags: DdimFlags;
  /** What the denoiser outputs (default `eps`). */
  prediction?: Prediction;
  /** Generator of x_T and of the step noise (the run's `sample/noise` stream). */
  rng: Rng;
  /** Called once with t = T and x_T. */
  onStart?: StateCallback;
  /** Called after each step with the t of the new state (see {@link ddimVisited}) and the state. */
  onStep?: StateCallback;
}

/**
 * Runs DDIM from x_T down to x_0 and returns x_0. Draws, in order: x_T (gaussian), then z of
 * each step whose σ > 0 (when step noise is on). Memory stays flat.
 */
export async function sampleDdim(
  denoise: Denoiser,
  schedule: Schedule,
  options: DdimOptions,
): Promise<tf.Tensor4D> {
  const { shape, flags, rng } = options;
  const T = schedule.timesteps;
  const tau = ddimTimesteps(T, flags.steps ?? T);
  const prediction = options.prediction ?? "eps";
  const n = shape.reduce((a, b) => a * b, 1);
  let x = initialState(shape, { initialNoise: flags.initialNoise, rng });
  if (options.onStart) await options.onStart(T, x);
  for (let k = tau.length - 1; k >= 0; k--) {
    const i = tau[k];
    const alphaBar = schedule.alphaBars[i];
    const alphaBarPrev = k > 0 ? schedule.alphaBars[tau[k - 1]] : 1;
    const sigma = ddimSigma(alphaBar, alphaBarPrev, flags);
    const z = flags.stepNoise && sigma > 0 ? rng.normal(n) : null;
    const t = tf.fill([shape[0]], i) as tf.Tensor1D;
    const out = await denoise(x, t);
    const next = tf.tidy(() => {
      const denoised = interpretOutput(out, x, {
        prediction,
        level: noiseLevelAt(schedule, i),
        clipX0: flags.clipX0,
      });
      return ddimStep(denoised, {
        alphaBar,
        alphaBarPrev,
        eta: flags.eta,
        z: z ? tf.tensor4d(z, shape) : null,
      });
    });
    tf.dispose([t, out]);
    x.dispose();
    x = next;
    if (options.onStep) await options.onStep(k > 0 ? tau[k - 1] + 1 : 0, x);
  }
  return x;
}
