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
import { tf } from "../tf.ts";
import { type StepRule, visitedStates } from "./sampler.ts";
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
  return visitedStates(Array.from(ddimTimesteps(timesteps, steps)).reverse());
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

/**
 * The coefficients of a DDIM step from ᾱ to ᾱ': x' = signal · x̂_0 + direction · ε̂ + sigma · z
 * with signal = √ᾱ', direction = √max(0, 1 - ᾱ' - σ²) and sigma = {@link ddimSigma}.
 */
export function ddimCoefficients(
  alphaBar: number,
  alphaBarPrev: number,
  options: { eta: number },
): { sigma: number; signal: number; direction: number } {
  const sigma = ddimSigma(alphaBar, alphaBarPrev, options);
  return {
    sigma,
    signal: Math.sqrt(alphaBarPrev),
    direction: Math.sqrt(Math.max(0, 1 - alphaBarPrev - sigma * sigma)),
  };
}

/** One DDIM step from ε̂ and x̂_0 to the previous state; `z` null means no noise. Use in tf.tidy. */
export function ddimStep(
  prediction: Denoised,
  options: { alphaBar: number; alphaBarPrev: number; eta: number; z: tf.Tensor4D | null },
): tf.Tensor4D {
  const { sigma, signal, direction } = ddimCoefficients(
    options.alphaBar,
    options.alphaBarPrev,
    options,
  );
  const mean: tf.Tensor4D = tf.add(
    tf.mul(prediction.x0, signal),
    tf.mul(prediction.eps, direction),
  );
  return options.z === null || sigma === 0 ? mean : tf.add(mean, tf.mul(options.z, sigma));
}

/** ᾱ of step index `index`, 1 for index -1 (the state after the last step, x_0). */
export function ddimAlphaBar(schedule: Schedule, index: number): number {
  return index >= 0 ? schedule.alphaBars[index] : 1;
}

/** The flags of DDIM sampling (a subset of the `sampler` section). */
export type DdimFlags =
  & Pick<SamplerConfig, "initialNoise" | "stepNoise" | "eta">
  & Partial<Pick<SamplerConfig, "clipX0" | "steps">>;

/**
 * DDIM's step rule: x̂_0 and ε̂ from the network output, then {@link ddimStep} from ᾱ of the
 * current index to ᾱ of the next one (1 after the last step). The step noise is drawn only for
 * steps whose σ > 0, when step noise is on.
 */
export function ddimRule(
  schedule: Schedule,
  options: { flags: DdimFlags; prediction?: Prediction },
): StepRule {
  const { flags } = options;
  const prediction = options.prediction ?? "eps";
  const alphaBarOf = (index: number): number => ddimAlphaBar(schedule, index);
  return {
    drawsNoise: (index, prevIndex) =>
      flags.stepNoise && ddimSigma(alphaBarOf(index), alphaBarOf(prevIndex), flags) > 0,
    step(output, x, { index, prevIndex, z }) {
      const denoised = interpretOutput(output, x, {
        prediction,
        level: noiseLevelAt(schedule, index),
        clipX0: flags.clipX0,
      });
      return ddimStep(denoised, {
        alphaBar: alphaBarOf(index),
        alphaBarPrev: alphaBarOf(prevIndex),
        eta: flags.eta,
        z,
      });
    },
  };
}
