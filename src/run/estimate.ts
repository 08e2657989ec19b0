/**
 * The dry run's estimated wall time: a few real training steps of the configured model on the
 * configured backend (random data of the configured shape, the configured batch, micro-batch and
 * workers) and one timed sampling step, scaled by the run's step counts. A configuration whose
 * measurement would itself take long is estimated from one forward pass instead, and says so.
 * @module
 */
import type { LoadedExperiment } from "../config/mod.ts";
import { initBackend } from "../backend/mod.ts";
import { samplingSteps } from "../diffusion/generate.ts";
import { makeSchedule } from "../diffusion/schedule.ts";
import { createModel } from "../model/mod.ts";
import { deriveRng } from "../rng.ts";
import { tf } from "../tf.ts";
import { Adam, type BatchSource, plannedSteps, trainModel } from "../train/mod.ts";
import { datasetSize } from "./describe.ts";
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
  /** Predicted training + sampling seconds (decoding and figures not counted). */
  totalSeconds: number;
  /** Why the training steps were not measured (estimated from one forward pass instead). */
  skipped?: string;
}

/** Times `fn` in seconds. */
async function timed(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
}

/** Measures a few training steps and a sampling step of the experiment on this machine. */
export async function estimateRun(loaded: LoadedExperiment): Promise<RunEstimate> {
  const { config } = loaded;
  const backend = await initBackend(config.backend);
  const size = config.transform.size;
  const c = config.model.channels;
  const schedule = makeSchedule(config.schedule);
  const steps = plannedSteps(await datasetSize(config, loaded.file), config.train).total;
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
    const oneForward = await timed(() => forward(1));
    // A training step costs about three forward passes per image.
    const predicted = 3 * oneForward * batchSize * (1 + TIMED_STEPS);
    const samplePerStep = await timed(() => forward(Math.min(sampler.batchSize, sampler.count)));
    let secondsPerStep = 3 * oneForward * batchSize;
    let skipped: string | undefined;
    if (predicted > MAX_MEASURE_SECONDS) {
      skipped = `measuring ${1 + TIMED_STEPS} training steps would take about ` +
        `${formatDuration(predicted)}: estimated from one forward pass instead`;
    } else {
      workers = await startWorkers(config, backend);
      const data: BatchSource = {
        count: batchSize * (1 + TIMED_STEPS),
        shape: [size, size, c],
        flip: false,
        batch: (indices) => rng.normal(indices.length * size * size * c).map((v) => v / 3),
      };
      const times: number[] = [];
      let last = performance.now();
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
        onStep: () => {
          const now = performance.now();
          times.push((now - last) / 1000);
          last = now;
        },
      });
      const timedSteps = times.slice(1);
      secondsPerStep = timedSteps.reduce((a, b) => a + b, 0) / timedSteps.length;
    }
    return {
      backend: backend.name,
      secondsPerStep,
      steps,
      secondsPerSampleStep: samplePerStep,
      sampleSteps,
      totalSeconds: secondsPerStep * steps + samplePerStep * sampleSteps,
      ...(skipped ? { skipped } : {}),
    };
  } finally {
    workers?.close();
    optimizer.dispose();
    model.dispose();
  }
}

/** The dry run's lines about the estimate. */
export function formatEstimate(e: RunEstimate): string {
  const lines = [
    `estimated time    ${formatDuration(e.totalSeconds)} on ${e.backend} on this machine: ` +
    `training ${e.steps} × ${e.secondsPerStep.toFixed(3)} s/step` +
    ` + sampling ${e.sampleSteps} × ${e.secondsPerSampleStep.toFixed(3)} s/step` +
    ` (decoding and figures not counted)`,
  ];
  if (e.skipped) lines.push(`                  (${e.skipped})`);
  return lines.join("\n");
}
