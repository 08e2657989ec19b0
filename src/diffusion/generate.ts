/**
 * The one sampling loop, as in a diffusers pipeline:
 * `for i in timesteps: out = denoise(x, i); x = rule.step(out, x, i)`. DDPM and DDIM are step
 * rules (./ddpm.ts, ./ddim.ts) over a list of 0-based timesteps; recovery runs the same loop
 * over a shortened list. `generate` picks the rule and the list from the `sampler` section.
 * @module
 */
import type { SamplerConfig } from "../../schemas/experiment.ts";
import type { Rng } from "../rng.ts";
import { tf } from "../tf.ts";
import { ddimRule, ddimTimesteps } from "./ddim.ts";
import {
  type AncestralFlags,
  ddpmRule,
  ddpmTimesteps,
  type Denoiser,
  initialState,
  type StateCallback,
  type StepRule,
  visitedStates,
} from "./ddpm.ts";
import type { Schedule } from "./schedule.ts";
import type { Prediction } from "./targets.ts";
import type { DdimFlags } from "./ddim.ts";

/** Options of {@link reverseProcess}. */
export interface ReverseOptions {
  /** The starting state (x_T, or x_t for recovery); the loop takes it over and disposes it. */
  x: tf.Tensor4D;
  /** The 0-based indices to visit, descending (the first is the starting state's t - 1). */
  timesteps: readonly number[];
  /** Generator of the step noise z, drawn before each step that needs one. */
  rng: Rng;
  /** Called once with the starting state (its t = timesteps[0] + 1). */
  onStart?: StateCallback;
  /** Called after each step with the t of the new state, the state and the progress. */
  onStep?: StateCallback;
}

/**
 * Runs `rule` over `timesteps` from `options.x` and returns the last state. Each step draws its
 * z (when the rule says so), evaluates the network, steps in a tf.tidy and disposes the previous
 * state, so memory stays flat.
 */
export async function reverseProcess(
  denoise: Denoiser,
  rule: StepRule,
  options: ReverseOptions,
): Promise<tf.Tensor4D> {
  const { timesteps, rng } = options;
  const visited = visitedStates(timesteps);
  const steps = timesteps.length;
  let x = options.x;
  const shape = x.shape;
  if (options.onStart) await options.onStart(visited[0], x, { step: 0, steps });
  for (let k = 0; k < steps; k++) {
    const index = timesteps[k];
    const prevIndex = k + 1 < steps ? timesteps[k + 1] : -1;
    const z = rule.drawsNoise(index, prevIndex) ? rng.normal(x.size) : null;
    const t = tf.fill([shape[0]], index) as tf.Tensor1D;
    const raw = await denoise(x, t);
    const output = raw instanceof Float32Array ? tf.tensor4d(raw, shape) : raw;
    const current = x;
    const next = tf.tidy(() =>
      rule.step(output, current, { index, prevIndex, z: z ? tf.tensor4d(z, shape) : null })
    );
    tf.dispose([t, output, x]);
    x = next;
    if (options.onStep) await options.onStep(visited[k + 1], x, { step: k + 1, steps });
  }
  return x;
}

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

type SamplerKind = Pick<SamplerConfig, "kind"> & Partial<Pick<SamplerConfig, "steps">>;

/** The 0-based indices a sampler visits, descending: T - 1..0, or DDIM's subsequence. */
export function samplerTimesteps(sampler: SamplerKind, timesteps: number): number[] {
  if (sampler.kind === "ddim") {
    return Array.from(ddimTimesteps(timesteps, sampler.steps ?? timesteps)).reverse();
  }
  return ddpmTimesteps(timesteps - 1);
}

/**
 * The t of every state a sampler passes through, x_T first and the sample (t = 0) last:
 * T, T - 1, ..., 0 for ddpm; the DDIM subsequence for ddim.
 */
export function visitedTimesteps(sampler: SamplerKind, timesteps: number): number[] {
  return visitedStates(samplerTimesteps(sampler, timesteps));
}

/** Number of network evaluations one batch takes. */
export function samplingSteps(sampler: SamplerKind, timesteps: number): number {
  return samplerTimesteps(sampler, timesteps).length;
}

/** The step rule of the `sampler` section. */
export function samplerRule(
  schedule: Schedule,
  options: { sampler: GenerateFlags; prediction?: Prediction },
): StepRule {
  const { sampler, prediction } = options;
  return sampler.kind === "ddim"
    ? ddimRule(schedule, { flags: sampler, prediction })
    : ddpmRule(schedule, { flags: sampler, prediction });
}

/**
 * Samples one batch with the configured sampler; returns x_0 [count, H, W, C]. Draws, in
 * order: x_T (gaussian), then the z of each step that needs one.
 */
export function generate(
  denoise: Denoiser,
  schedule: Schedule,
  options: GenerateOptions,
): Promise<tf.Tensor4D> {
  const { sampler, shape, rng, prediction, onStart, onStep } = options;
  return reverseProcess(denoise, samplerRule(schedule, { sampler, prediction }), {
    x: initialState(shape, { initialNoise: sampler.initialNoise, rng }),
    timesteps: samplerTimesteps(sampler, schedule.timesteps),
    rng,
    onStart,
    onStep,
  });
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
  /** Start index (default T - 1) and start x, copied (the recovery experiment starts at x_t). */
  start?: { index: number; x: tf.Tensor4D };
  /** Called once with the starting state: t = T (or start.index + 1) and x_t. */
  onStart?: StateCallback;
  /** Called after each step with the t of the new state (= the index of the step) and it. */
  onStep?: StateCallback;
}

/**
 * DDPM ancestral sampling (Algorithm 2) from x_T (or `options.start`) down to x_0. Draws, in
 * order: x_T (unless `start` is given), then z of each step with index > 0 (with step noise).
 */
export function sampleDdpm(
  denoise: Denoiser,
  schedule: Schedule,
  options: SampleOptions,
): Promise<tf.Tensor4D> {
  const { shape, flags, rng, start } = options;
  return reverseProcess(denoise, ddpmRule(schedule, { flags, prediction: options.prediction }), {
    x: start ? tf.clone(start.x) : initialState(shape, { initialNoise: flags.initialNoise, rng }),
    timesteps: ddpmTimesteps(start?.index ?? schedule.timesteps - 1),
    rng,
    onStart: options.onStart,
    onStep: options.onStep,
  });
}

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
  /** Called after each step with the t of the new state (see `ddimVisited`) and the state. */
  onStep?: StateCallback;
}

/**
 * DDIM from x_T down to x_0 on `flags.steps` timesteps. Draws, in order: x_T, then z of each
 * step whose σ > 0 (with step noise).
 */
export function sampleDdim(
  denoise: Denoiser,
  schedule: Schedule,
  options: DdimOptions,
): Promise<tf.Tensor4D> {
  const { shape, flags, rng } = options;
  return reverseProcess(denoise, ddimRule(schedule, { flags, prediction: options.prediction }), {
    x: initialState(shape, { initialNoise: flags.initialNoise, rng }),
    timesteps: samplerTimesteps({ kind: "ddim", steps: flags.steps }, schedule.timesteps),
    rng,
    onStart: options.onStart,
    onStep: options.onStep,
  });
}
