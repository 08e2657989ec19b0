/**
 * The `train` section: DDPM training (Ho et al., Algorithm 1) with the configured loss and
 * optimizer. Randomness is derived per epoch (data order, flips) and per step (t, noise) from
 * the experiment seed, so any step can be replayed without carrying generator state.
 * @module
 */
import type {
  LossConfig,
  ModelConfig,
  OptimizerConfig,
  TrainConfig,
} from "../../schemas/experiment.ts";
import type { Schedule } from "../diffusion/schedule.ts";
import type { ConditionInput, DenoiseModel } from "../model/mod.ts";
import { deriveRng } from "../rng.ts";
import { UserError } from "../errors.ts";
import type { Ema } from "./ema.ts";
import type { TrainEngine } from "./engine.ts";
import { learningRate } from "./lr.ts";
import type { GradientWorkers } from "./parallel/mod.ts";
import type { Adam } from "./optimizer.ts";
import { trainStep } from "./step.ts";
import { epochPlan, plannedSteps } from "./plan.ts";

export { lossValue } from "./loss.ts";
export { Adam } from "./optimizer.ts";
export { Ema } from "./ema.ts";
export { learningRate } from "./lr.ts";
export { clipByGlobalNorm } from "./clip.ts";
export { trainStep } from "./step.ts";
export { epochPlan, plannedSteps } from "./plan.ts";
export type { EngineStep, TrainEngine, TrainState } from "./engine.ts";

/** Where training images come from: a count, the image shape and a batch maker. */
export interface BatchSource {
  /** Number of images. */
  count: number;
  /** [H, W, C]. */
  shape: [number, number, number];
  /** Probability of a random horizontal flip per image per epoch (`true`: 0.5, `false`: 0). */
  flip: boolean | number;
  /** NHWC batch in [-1, 1] of the images at `indices`, mirrored where `flips[i]`. */
  batch(indices: Int32Array, flips: Uint8Array): Float32Array;
  /**
   * The labels of the images at `indices`, one Int32Array per attribute (for conditional models;
   * absent when the data has no labels).
   */
  labels?(indices: Int32Array): Int32Array[];
}

/** One optimizer step's record (metrics.jsonl). */
export interface StepRecord {
  /** 1-based step number. */
  step: number;
  /** 0-based epoch. */
  epoch: number;
  /** Loss of the step's batch. */
  loss: number;
}

/** Options of {@link trainModel}. */
export interface TrainOptions {
  /** Experiment seed. */
  seed: number;
  /** Noise schedule. */
  schedule: Schedule;
  /** Loss section. */
  loss: LossConfig;
  /** Train section. */
  train: TrainConfig;
  /** Optimizer holding the state to update. */
  optimizer: Adam;
  /** Training data. */
  data: BatchSource;
  /** Called after every step (e.g. to log, write metrics, checkpoint). */
  onStep?: (record: StepRecord) => void | Promise<void>;
  /** Polled between steps: return true to stop early (SIGINT). */
  shouldStop?: () => boolean;
  /** Steps already done (resume); training continues at step `startStep + 1`. */
  startStep?: number;
  /** The `model` section (prediction target, dropout). */
  model?: Pick<ModelConfig, "prediction" | "dropout">;
  /** The `optimizer` section (learning-rate schedule, gradient clipping). */
  optimizerConfig?: OptimizerConfig;
  /** Weight average updated after every step (`optimizer.ema`). */
  ema?: Ema | null;
  /** Data-parallel gradient workers (the main thread computes one more shard). */
  workers?: GradientWorkers;
  /**
   * A conditional model: which of `data.labels`' columns it sees (in `model.conditioning`
   * order) and the probability that an example's labels are dropped (`pUncond`).
   */
  condition?: { columns: number[]; pUncond: number };
  /**
   * A compiled engine that runs the steps instead of tfjs (src/gpu): the losses are read every
   * `train.logEvery` steps and at each epoch's end, where the engine's state is also copied into
   * `model`, the optimizer and the EMA before `onStep` sees the epoch's last step (so checkpoints
   * and evaluations read the trained weights), and at the end.
   */
  engine?: TrainEngine;
}

/** The result of a training run. */
export interface TrainResult {
  /** Optimizer steps done in total. */
  steps: number;
  /** Whether training stopped early through `shouldStop`. */
  stopped: boolean;
}

/** The t indices and noise of step `step` (1-based), from its own generators. */
export function stepDraws(
  step: number,
  options: { seed: number; batch: number; size: number; timesteps: number },
): { steps: Int32Array; noise: Float32Array } {
  const tRng = deriveRng(options.seed, `train/t/step-${step}`);
  const steps = new Int32Array(options.batch);
  for (let i = 0; i < options.batch; i++) steps[i] = tRng.int(options.timesteps);
  const noise = deriveRng(options.seed, `train/noise/step-${step}`).normal(
    options.batch * options.size,
  );
  return { steps, noise };
}

/**
 * The labels of step `step` (1-based) for a conditional model: the chosen `columns` of the
 * batch's labels, row-major [n, A], and which examples get the null embedding: example i is
 * dropped when the i-th uniform draw of stream `train/uncond/step-<step>` is below `pUncond`.
 */
export function stepCondition(
  labels: Int32Array[],
  options: { seed: number; step: number; columns: number[]; pUncond: number },
): ConditionInput {
  const { columns } = options;
  const n = labels[0]?.length ?? 0;
  const a = columns.length;
  const out = new Int32Array(n * a);
  columns.forEach((column, j) => {
    const values = labels[column];
    for (let i = 0; i < n; i++) out[i * a + j] = values[i];
  });
  const rng = deriveRng(options.seed, `train/uncond/step-${options.step}`);
  const drop = new Uint8Array(n);
  for (let i = 0; i < n; i++) drop[i] = rng.uniform() < options.pUncond ? 1 : 0;
  return { labels: out, drop };
}

/**
 * The training loss became NaN or infinite at `step`: the weights no longer hold numbers, so
 * training cannot go on from them. (Its message is the plain fact; the runner explains it.)
 */
export class LossDivergedError extends Error {
  /** The 1-based step whose loss was not finite. */
  readonly step: number;
  /** Its 0-based epoch. */
  readonly epoch: number;
  /** The loss (NaN, Infinity or -Infinity). */
  readonly loss: number;

  /** The divergence of `record`. */
  constructor(record: StepRecord) {
    super(`loss became ${record.loss} at step ${record.step}`);
    this.name = "LossDivergedError";
    this.step = record.step;
    this.epoch = record.epoch;
    this.loss = record.loss;
  }
}

/**
 * Trains `model` in place for the planned number of steps. Throws a {@linkcode LossDivergedError}
 * when a step's loss is not finite.
 */
export async function trainModel(model: DenoiseModel, options: TrainOptions): Promise<TrainResult> {
  const { data, train, seed } = options;
  const { perEpoch, total } = plannedSteps(data.count, train);
  if (perEpoch === 0 && total > 0) {
    throw new UserError(
      `the dataset has ${data.count} images, fewer than one batch, and dropLast is on`,
      { path: "train.batchSize", expected: `at most ${data.count}, or train.dropLast false` },
    );
  }
  const [h, w, c] = data.shape;
  let step = options.startStep ?? 0;
  const engine = options.engine;
  // Steps the engine ran whose losses are not read yet: read in bulk, then reported in order.
  const pending: { step: number; epoch: number }[] = [];
  const flush = async (sync: boolean) => {
    if (!engine || pending.length === 0) return;
    const losses = await engine.losses();
    const records = pending.splice(0);
    const bad = losses.findIndex((l) => !Number.isFinite(l));
    if (bad >= 0) {
      // As on tfjs: the steps before are reported, the first bad one throws.
      for (let i = 0; i < bad; i++) await options.onStep?.({ ...records[i], loss: losses[i] });
      throw new LossDivergedError({ ...records[bad], loss: losses[bad] });
    }
    if (sync) {
      const state = { model, optimizer: options.optimizer, ema: options.ema ?? null };
      await engine.syncTo(state, records[records.length - 1].step);
    }
    for (let i = 0; i < records.length; i++) {
      await options.onStep?.({ ...records[i], loss: losses[i] });
    }
  };
  await engine?.loadFrom({ model, optimizer: options.optimizer, ema: options.ema ?? null });
  while (step < total) {
    const epoch = Math.floor(step / perEpoch);
    const { order, flips } = epochPlan(data.count, { seed, epoch, train, flip: data.flip });
    for (let k = step % perEpoch; k < perEpoch && step < total; k++) {
      if (options.shouldStop?.()) {
        await flush(true);
        return { steps: step, stopped: true };
      }
      const start = k * train.batchSize;
      const indices = order.subarray(start, Math.min(start + train.batchSize, data.count));
      const batchFlips = new Uint8Array(indices.length);
      for (let i = 0; i < indices.length; i++) batchFlips[i] = flips[indices[i]];
      const x0 = data.batch(indices, batchFlips);
      step++;
      const draws = stepDraws(step, {
        seed,
        batch: indices.length,
        size: h * w * c,
        timesteps: options.schedule.timesteps,
      });
      const opt = options.optimizerConfig;
      const cond = options.condition;
      if (cond && !data.labels) throw new Error("a conditional model needs labelled data");
      const condition = cond && data.labels
        ? stepCondition(data.labels(indices), { seed, step, ...cond })
        : undefined;
      const batch = { x0, ...draws, shape: data.shape, ...(condition ? { condition } : {}) };
      const dropout = (options.model?.dropout ?? 0) > 0
        ? { seed, stream: `train/dropout/step-${step}` }
        : undefined;
      const lr = opt ? learningRate(step, { ...opt, totalSteps: total }) : undefined;
      if (engine) {
        await engine.step(batch, { step, lr, dropout });
        pending.push({ step, epoch });
        const endOfEpoch = k === perEpoch - 1 || step === total;
        if (endOfEpoch || pending.length >= train.logEvery) await flush(endOfEpoch);
        continue;
      }
      const loss = await trainStep(model, batch, {
        schedule: options.schedule,
        loss: options.loss,
        optimizer: options.optimizer,
        prediction: options.model?.prediction,
        dropout,
        lr,
        clipGradNorm: opt?.clipGradNorm,
        workers: options.workers,
        microBatch: train.microBatch,
      });
      if (!Number.isFinite(loss)) throw new LossDivergedError({ step, epoch, loss });
      options.ema?.update(model.params, step);
      await options.onStep?.({ step, epoch, loss });
    }
  }
  return { steps: step, stopped: false };
}
