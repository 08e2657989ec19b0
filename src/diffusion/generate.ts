/**
 * One entry point for the `sampler` section: runs DDPM or DDIM as `sampler.kind` says, with the
 * same callbacks, so that the runner, the trajectory figure and tests need not tell them apart.
 * @module
 */
import type { SamplerConfig } from "../../schemas/experiment.ts";
import type { Rng } from "../rng.ts";
import type { tf } from "../tf.ts";
import { ddimVisited, sampleDdim } from "./ddim.ts";
import { type Denoiser, sampleDdpm, type StateCallback } from "./sampler.ts";
import type { Schedule } from "./schedule.ts";
import type { Prediction } from "./targets.ts";

/** The sampler fields {@link generate} reads. */
export type GenerateFlags =
  & Pick<SamplerConfig, "kind" | "variance" | "initialNoise" | "stepNoise" | "eta">
  & Partial<Pick<SamplerConfig, "clipX0" | "steps">>;

/** Options of {@link generate}. */
export interface GenerateOptions {
  /** [count, H, W, C] of the batch to generate. */
  shape: [number, number, number, number];
  /** The `sampler` section (or the fields of it that matter). */
  sampler: GenerateFlags;
  /** What the denoiser outputs (`model.prediction`; default `eps`). */
  prediction?: Prediction;
  /** Generator of x_T and of the step noise (the run's `sample/noise` stream). */
  rng: Rng;
  /** Called once with t = T and x_T. */
  onStart?: StateCallback;
  /** Called after each step with the t of the new state (T - 1 .. 0 for ddpm) and the state. */
  onStep?: StateCallback;
}

/**
 * The t of every state a sampler passes through, x_T first and the sample (t = 0) last:
 * T, T - 1, ..., 0 for ddpm; the DDIM subsequence for ddim.
 */
export function visitedTimesteps(
  sampler: Pick<SamplerConfig, "kind"> & Partial<Pick<SamplerConfig, "steps">>,
  timesteps: number,
): number[] {
  if (sampler.kind === "ddim") return ddimVisited(timesteps, sampler.steps ?? timesteps);
  return Array.from({ length: timesteps + 1 }, (_, k) => timesteps - k);
}

/** Number of network evaluations one batch takes. */
export function samplingSteps(
  sampler: Pick<SamplerConfig, "kind"> & Partial<Pick<SamplerConfig, "steps">>,
  timesteps: number,
): number {
  return sampler.kind === "ddim" ? sampler.steps ?? timesteps : timesteps;
}

/** Samples one batch with the configured sampler; returns x_0 [count, H, W, C]. */
export function generate(
  denoise: Denoiser,
  schedule: Schedule,
  options: GenerateOptions,
): Promise<tf.Tensor4D> {
  const { sampler, shape, rng, prediction, onStart, onStep } = options;
  if (sampler.kind === "ddim") {
    return sampleDdim(denoise, schedule, {
      shape,
      flags: sampler,
      prediction,
      rng,
      onStart,
      onStep,
    });
  }
  return sampleDdpm(denoise, schedule, { shape, flags: sampler, prediction, rng, onStart, onStep });
}
