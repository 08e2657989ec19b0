/**
 * A run's training phase (Algorithm 1): from step 0 or the run's checkpoint, with the step log,
 * checkpoints every `train.checkpointEvery` epochs and at the end (also when stopped), and the
 * evaluations at epoch ends; or the training of a complete run with the same training part,
 * reused.
 * @module
 */
import { plural } from "../config/summary.ts";
import { batchLabels, type Dataset, makeBatch } from "../data/mod.ts";
import { type BatchSource, plannedSteps, trainModel } from "../train/mod.ts";
import type { RunEvaluations } from "./evaluation_phase.ts";
import type { RunProgress } from "./failures.ts";
import { yieldToEvents } from "./figures.ts";
import type { RunRecord } from "./lifecycle.ts";
import { TrainingLog } from "./logs.ts";
import { peakRssMiB } from "./memory.ts";
import type { Manifest } from "./manifest.ts";
import type { RunSession } from "./session.ts";
import { findReusableTraining, trainingHash } from "./training_cache.ts";
import type { RunContext } from "./types.ts";

/** What {@linkcode trainPhase} needs besides the session. */
export interface TrainPhase {
  /** The run folder being written. */
  run: RunRecord;
  /** The manifest of the interrupted run resumed (training continues from its checkpoint). */
  previous: Manifest | null;
  /** The evaluations at the end of each epoch (the `eval` section or the caller's hook). */
  evaluations: RunEvaluations;
  /** Where the run is (the step done), for the message of a failure. */
  at: RunProgress;
  /** The run's options (log, signal, progress, onStep). */
  options: RunContext;
}

/**
 * Trains the session's network (see the module documentation) on the session's engine, or takes
 * over the checkpoint of a complete run with the same training part (unless resuming, or
 * `retrain`). Returns the step and epoch reached; the manifest's summary gets the loss figures.
 */
export async function trainPhase(
  session: RunSession,
  ctx: TrainPhase,
): Promise<{ step: number; epoch: number }> {
  const { config, model, ema } = session;
  const dataset = session.dataset!;
  const { run, options } = ctx;
  const reuse = options.resume || options.retrain
    ? null
    : await findReusableTraining(options.outRoot, {
      hash: trainingHash(config),
      exclude: run.dir,
      contentHash: dataset.record.contentHash,
    });
  if (reuse) {
    options.log(
      `reusing the training of ${reuse.dir} (same training config; --retrain to train anew)`,
    );
    return await run.reuseTraining(reuse.dir, { model, ema });
  }
  return await train(session, ctx);
}

/** Algorithm 1 from step 0 or the run's checkpoint (see the module documentation). */
async function train(
  session: RunSession,
  ctx: TrainPhase,
): Promise<{ step: number; epoch: number }> {
  const { config, model, optimizer, ema, backend } = session;
  const dataset = session.dataset!;
  const { run, options } = ctx;
  const { log } = options;
  const saved = { model, optimizer, ema };
  const resumed = ctx.previous ? await session.loadCheckpoint(run.checkpointDir) : null;
  const startStep = resumed?.step ?? 0;
  const steps = plannedSteps(dataset.count, config.train);
  const epochs = Math.ceil(steps.total / Math.max(1, steps.perEpoch));
  if (resumed) log(`resuming at step ${startStep} of ${steps.total}`);
  log(
    `training ${plural(steps.total, "step")} on ` +
      (backend.engine === "webgpu"
        ? `the WebGPU engine (${backend.adapter}) `
        : `${backend.name} `) +
      `(${session.parameters.toLocaleString("en-US")} parameters)`,
  );
  const trainLog = await TrainingLog.open(run.dir, {
    startStep,
    totalSteps: steps.total,
    epochs,
    logEvery: config.train.logEvery,
    previous: run.manifest.summary,
    log,
  });
  const conditional = session.conditioning;
  const engine = session.trainEngine;
  const evaluate = ctx.evaluations.afterEpoch;
  try {
    const result = await trainModel(model, {
      seed: config.seed,
      schedule: session.schedule,
      loss: config.loss,
      train: config.train,
      optimizer,
      model: config.model,
      optimizerConfig: config.optimizer,
      ema,
      workers: session.workers,
      ...(engine ? { engine } : {}),
      data: batchSource(dataset),
      ...(conditional
        ? {
          condition: {
            columns: conditional.conditioned.columns,
            pUncond: config.model.conditioning!.pUncond,
          },
        }
        : {}),
      startStep,
      shouldStop: () => options.signal?.aborted ?? false,
      onStep: async (record) => {
        ctx.at.step = record.step;
        await trainLog.record(record);
        const { step, epoch } = record;
        const endOfEpoch = step % steps.perEpoch === 0;
        if (
          endOfEpoch && (epoch + 1) % config.train.checkpointEvery === 0 && step < steps.total
        ) {
          await run.checkpoint(saved, { step, epoch });
        }
        if (endOfEpoch && evaluate) {
          const numbers = await evaluate({ step, epoch, final: false });
          if (numbers) await run.appendEvaluation({ step, epoch, ...numbers });
        }
        options.onStep?.(record);
        options.progress?.update("train", step, steps.total, {
          epoch: epoch + 1,
          epochs,
          loss: trainLog.recentLoss,
        });
        await yieldToEvents();
      },
    });
    const trained = { step: result.steps, epoch: trainLog.last?.epoch ?? resumed?.epoch ?? 0 };
    await run.checkpoint(saved, trained);
    if (result.stopped) log(`interrupted at step ${result.steps}: checkpoint written`);
    Object.assign(run.manifest.summary, {
      steps: result.steps,
      ...trainLog.summary(),
      // The process's peak memory up to the end of training (data, model, optimizer, workers).
      trainPeakRssMiB: peakRssMiB(),
    });
    return trained;
  } finally {
    trainLog.close();
  }
}

/** The training images as the training loop takes them: indices and flips to an NHWC batch. */
function batchSource(dataset: Dataset): BatchSource {
  const labels = dataset.labels;
  return {
    count: dataset.count,
    shape: [dataset.size, dataset.size, dataset.channels],
    flip: dataset.flipProbability,
    batch: (indices, flips) =>
      makeBatch(dataset, indices, { flips: Array.from(flips, (f) => f === 1) }),
    ...(labels ? { labels: (indices: Int32Array) => batchLabels(labels, indices) } : {}),
  };
}
