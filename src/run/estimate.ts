/**
 * The dry run's estimated wall time: a few real training steps of the configured model on the
 * configured backend (random data of the configured shape, the configured batch, micro-batch and
 * workers) and forward passes of growing batches, scaled by the run's step counts. A
 * configuration whose measurement would itself take long (more than about 20 s) is estimated
 * from forward passes instead, and says so.
 * @module
 */
import type { Experiment } from "../../schemas/experiment.ts";
import type { LoadedExperiment } from "../config/mod.ts";
import { initBackend } from "../backend/mod.ts";
import { samplingSteps } from "../diffusion/generate.ts";
import { makeSchedule } from "../diffusion/schedule.ts";
import { createModel } from "../model/mod.ts";
import { deriveRng } from "../rng.ts";
import { tf } from "../tf.ts";
import { Adam, type BatchSource, plannedSteps, trainModel } from "../train/mod.ts";
import { datasetSize } from "./describe.ts";
import { plural } from "../config/summary.ts";
import { formatDuration } from "./logs.ts";
import { startWorkers } from "./runner.ts";

/** Training steps timed (after one warm-up step). */
const TIMED_STEPS = 2;
/** Longest measurement (seconds, predicted from one forward pass) run before skipping it. */
const MAX_MEASURE_SECONDS = 20;

/** What {@linkcode estimateRun} measured and predicts. */
export interface RunEstimate {
  /** The backend measured on. */
  backend: string;
  /** Seconds per training step (measured, or from the forward pass when `skipped`). */
  secondsPerStep: number;
  /** Training steps of the run. */
  steps: number;
  /** Seconds per sampling step of one sampling batch. */
  secondsPerSampleStep: number;
  /** Sampling steps of the run (all batches). */
  sampleSteps: number;
  /** The `eval` section's cost, when the experiment has one. */
  evaluation?: EvaluationEstimate;
  /**
   * Predicted training + sampling seconds, and the evaluations' sampling (decoding, figures and
   * the evaluations' feature network not counted).
   */
  totalSeconds: number;
  /** Why the training steps were not (all) measured, and what the estimate rests on instead. */
  skipped?: string;
}

/** What the `eval` section costs: its evaluations and the sampling each one does. */
export interface EvaluationEstimate {
  /** Evaluations: every `eval.every` epochs during training (not the last) and one at the end. */
  count: number;
  /** Images sampled per evaluation (`eval.samples`). */
  samples: number;
  /** Sampling batches of one evaluation. */
  batches: number;
  /** Sampling steps of one batch. */
  stepsPerBatch: number;
  /** Predicted sampling seconds of all evaluations. */
  seconds: number;
  /** Predicted sampling seconds of the evaluation at the end alone. */
  finalSeconds: number;
  /** Side the images are resized to for the feature network (`eval.resize`). */
  resize: number;
  /** The metrics (`eval.metrics`). */
  metrics: string[];
}

/**
 * The evaluations of `config` (none without an `eval` section) for a run of `steps` steps with
 * `perEpoch` steps per epoch, sampling at `secondsPerImageStep` seconds per image and step.
 */
export function estimateEvaluation(
  config: Experiment,
  options: {
    steps: { total: number; perEpoch: number };
    secondsPerImageStep: number;
    timesteps: number;
  },
): EvaluationEstimate | undefined {
  const settings = config.eval;
  if (!settings) return undefined;
  const { total, perEpoch } = options.steps;
  let during = 0;
  if (settings.every !== undefined && perEpoch > 0) {
    for (let e = 1; e * perEpoch < total; e++) if (e % settings.every === 0) during++;
  }
  const batches = Math.ceil(settings.samples / config.sampler.batchSize);
  const stepsPerBatch = samplingSteps(config.sampler, options.timesteps);
  // Every sample goes through every sampling step.
  const finalSeconds = settings.samples * stepsPerBatch * options.secondsPerImageStep;
  return {
    count: during + 1,
    samples: settings.samples,
    batches,
    stepsPerBatch,
    seconds: finalSeconds * (during + 1),
    finalSeconds,
    resize: settings.resize,
    metrics: settings.metrics,
  };
}

/** Times `fn` in seconds. */
async function timed(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
}

/**
 * The seconds of one forward pass of `batchSize` images: timed at 1, 2, 4, ... images while the
 * next pass is predicted to fit the time `budget`, then extrapolated linearly when it stops
 * short of the batch (`images` says how far the timing went).
 */
async function probeForward(
  forward: (n: number) => Promise<void>,
  options: { batchSize: number; budget: number },
): Promise<{ seconds: number; images: number }> {
  const { batchSize, budget } = options;
  let last = { n: 1, t: await timed(() => forward(1)) };
  let before = { n: 0, t: 0 };
  let spent = last.t;
  while (last.n < batchSize) {
    const next = Math.min(batchSize, last.n * 2);
    const slope = before.n === 0 ? last.t : Math.max(0, (last.t - before.t) / (last.n - before.n));
    const predicted = last.t + slope * (next - last.n);
    if (spent + predicted > budget) break;
    before = last;
    last = { n: next, t: await timed(() => forward(next)) };
    spent += last.t;
  }
  if (last.n === batchSize) return { seconds: last.t, images: batchSize };
  const slope = before.n === 0 ? last.t : Math.max(0, (last.t - before.t) / (last.n - before.n));
  return { seconds: last.t + slope * (batchSize - last.n), images: last.n };
}

/** Measures a few training steps and a sampling step of the experiment on this machine. */
export async function estimateRun(loaded: LoadedExperiment): Promise<RunEstimate> {
  // A conditional model is timed without its conditioning path (its size needs the labels).
  const config = {
    ...loaded.config,
    model: { ...loaded.config.model, conditioning: undefined },
  };
  const backend = await initBackend(config.backend);
  const size = config.transform.size;
  const c = config.model.channels;
  const schedule = makeSchedule(config.schedule);
  const plan = plannedSteps(await datasetSize(config, loaded.file), config.train);
  const steps = plan.total;
  const { batchSize } = config.train;
  const sampler = config.sampler;
  const sampleSteps = samplingSteps(sampler, schedule.timesteps) *
    Math.ceil(sampler.count / sampler.batchSize);
  const model = createModel(config.model, { rng: deriveRng(config.seed, "model/init") });
  const rng = deriveRng(config.seed, "estimate");
  const forward = async (n: number) => {
    const x = tf.tensor4d(rng.normal(n * size * size * c), [n, size, size, c]);
    const t = tf.fill([n], Math.floor(schedule.timesteps / 2), "int32") as tf.Tensor1D;
    const out = tf.tidy(() => model.predict(x, t));
    await out.data();
    tf.dispose([x, t, out]);
  };
  const optimizer = new Adam(model.params, config.optimizer);
  let workers: Awaited<ReturnType<typeof startWorkers>>;
  try {
    await forward(1); // warm-up: kernels compiled, weights uploaded
    const batchForward = await probeForward(forward, {
      batchSize,
      budget: MAX_MEASURE_SECONDS / 2,
    });
    let skipped: string | undefined;
    // A training step costs about three forward passes (forward, and a backward pass of about
    // twice that).
    const measuring = 3 * batchForward.seconds * (1 + TIMED_STEPS);
    if (batchForward.images < batchSize || measuring > MAX_MEASURE_SECONDS) {
      skipped = `measuring ${1 + TIMED_STEPS} training steps would take about ` +
        `${formatDuration(measuring)}: estimated as 3 forward passes of a batch` +
        (batchForward.images < batchSize
          ? `, timed up to ${batchForward.images} images and extrapolated`
          : "");
    }
    const samplePerStep = batchForward.seconds * Math.min(sampler.batchSize, sampler.count) /
      batchSize;
    let secondsPerStep = 3 * batchForward.seconds;
    if (!skipped) {
      workers = await startWorkers(config, { backend });
      const data: BatchSource = {
        count: batchSize * (1 + TIMED_STEPS),
        shape: [size, size, c],
        flip: false,
        batch: (indices) => rng.normal(indices.length * size * size * c).map((v) => v / 3),
      };
      const times: number[] = [];
      const started = performance.now();
      let last = started;
      await trainModel(model, {
        seed: config.seed,
        schedule,
        loss: config.loss,
        train: { ...config.train, epochs: 1, maxSteps: 1 + TIMED_STEPS, dropLast: true },
        optimizer,
        model: config.model,
        optimizerConfig: config.optimizer,
        workers,
        data,
        // Slower than predicted (a busy machine): stop once the time is spent.
        shouldStop: () =>
          times.length > 0 && (performance.now() - started) / 1000 > MAX_MEASURE_SECONDS,
        onStep: () => {
          const now = performance.now();
          times.push((now - last) / 1000);
          last = now;
        },
      });
      // The first step warms up; when it is the only one, it stands for all (an upper bound).
      const timedSteps = times.length > 1 ? times.slice(1) : times;
      secondsPerStep = timedSteps.reduce((a, b) => a + b, 0) / timedSteps.length;
      if (times.length < 1 + TIMED_STEPS) {
        skipped = `stopped measuring after ${plural(times.length, "training step")} ` +
          `(${formatDuration((performance.now() - started) / 1000)})` +
          (times.length === 1 ? ": the warm-up step stands for all (an upper bound)" : "");
      }
    }
    const evaluation = estimateEvaluation(config, {
      steps: plan,
      secondsPerImageStep: batchForward.seconds / batchSize,
      timesteps: schedule.timesteps,
    });
    return {
      backend: backend.name,
      secondsPerStep,
      steps,
      secondsPerSampleStep: samplePerStep,
      sampleSteps,
      ...(evaluation ? { evaluation } : {}),
      totalSeconds: secondsPerStep * steps + samplePerStep * sampleSteps +
        (evaluation?.seconds ?? 0),
      ...(skipped ? { skipped } : {}),
    };
  } finally {
    workers?.close();
    optimizer.dispose();
    model.dispose();
  }
}

/** The dry run's lines about the estimate: the time, and the evaluation's cost on its own line. */
export function formatEstimate(e: RunEstimate): string {
  const v = e.evaluation;
  const lines = [
    `estimated time    ${formatDuration(e.totalSeconds)} on ${e.backend} on this machine: ` +
    `training ${e.steps} × ${e.secondsPerStep.toFixed(3)} s/step` +
    ` + sampling ${e.sampleSteps} × ${e.secondsPerSampleStep.toFixed(3)} s/step` +
    (v ? ` + evaluation ${formatDuration(v.seconds)}` : "") +
    ` (decoding and figures not counted)`,
  ];
  if (e.skipped) lines.push(`                  (${e.skipped})`);
  if (v) {
    const when = v.count === 1
      ? "1 at the end"
      : `${v.count} (every eval.every epochs and at the end)`;
    lines.push(
      `evaluation        ${when}, eval.samples ${v.samples} each (${v.metrics.join(", ")}): ` +
        `sampling ${v.batches} batch${v.batches === 1 ? "" : "es"} × ${v.stepsPerBatch} steps ≈ ` +
        `${formatDuration(v.finalSeconds)} each, then the feature network on the samples at ` +
        `${v.resize} px (not measured; the reference and floor sets once per dataset)` +
        (v.samples > 32 || v.resize > 128
          ? ". Smaller: --set eval.samples=32 --set eval.resize=128"
          : ""),
    );
  }
  return lines.join("\n");
}
