/**
 * The runner: one experiment, top to bottom, like nanoGPT's train.py: config, data, model and
 * optimizer, training (or a reused training), sampling, figures. Each step is a call into the
 * module that owns it; the run folder's life cycle is ./lifecycle.ts, the logs ./logs.ts, the
 * pictures ./figures.ts and the dry-run report ./describe.ts.
 * @module
 */
import type { Experiment } from "../../schemas/experiment.ts";
import { type BackendInfo, initBackend } from "../backend/mod.ts";
import { configHash, describeSampler, type LoadedExperiment } from "../config/mod.ts";
import { plural } from "../config/summary.ts";
import { batchLabels, type Dataset, loadDataset, makeBatch } from "../data/mod.ts";
import { progressReporter } from "../data/progress.ts";
import { samplingSteps } from "../diffusion/generate.ts";
import type { Denoiser } from "../diffusion/sampler.ts";
import { makeSchedule, terminalSignal } from "../diffusion/schedule.ts";
import { guidedDenoiser } from "../diffusion/guidance.ts";
import { checkEvalInput, RunEvaluator } from "../eval/mod.ts";
import { writeLossPlot } from "../io/plot.ts";
import {
  type ConditionInput,
  countParameters,
  createModel,
  type DenoiseModel,
  modelShape,
  withParams,
} from "../model/mod.ts";
import { createSamplingEngine, type SamplingEngine } from "../onnx/mod.ts";
import { deriveRng } from "../rng.ts";
import { tf } from "../tf.ts";
import { loadCheckpoint } from "../train/checkpoint.ts";
import { GradientWorkers } from "../train/parallel/mod.ts";
import {
  Adam,
  type BatchSource,
  Ema,
  plannedSteps,
  type StepRecord,
  trainModel,
} from "../train/mod.ts";
import { describeRun, experimentFolder } from "./describe.ts";
import { type LabelPlan, resolveConditioning, type ResolvedConditioning } from "./conditions.ts";
import {
  type SampledImages,
  sampleImages,
  writeConditionalFigure,
  writeForwardFigure,
  writeRecoveryFigure,
  writeSampleFigures,
  yieldToEvents,
} from "./figures.ts";
import { refuseCompleteRun } from "./folder.ts";
import { resumableManifest, RunRecord } from "./lifecycle.ts";
import { acquireRunLock } from "./lock.ts";
import { peakRssMiB } from "./memory.ts";
import { TrainingLog } from "./logs.ts";
import type { Manifest } from "./manifest.ts";
import { findReusableTraining, trainingHash } from "./training_cache.ts";
import { explainFailure, type RunProgress, unmarkedFailure } from "./failures.ts";
import { RunFailure } from "../errors.ts";
import type { ConditionalScorer } from "../eval/conditional.ts";
import { type GuidanceRow, writeGuidanceTable } from "./guidance_table.ts";
import { conditionalScorer } from "../eval/conditional.ts";

export { describeRun } from "./describe.ts";
export type { ConditionalSamples, ConditionalScorer } from "../eval/conditional.ts";

/** Options of {@link runExperiment}. */
export interface RunOptions {
  /** Root of run folders (default `outputs`). */
  outRoot: string;
  /** Replace a complete run of the same config. */
  force?: boolean;
  /** Print what would run and exit. */
  dryRun?: boolean;
  /** Continue the interrupted run of this config from its last checkpoint. */
  resume?: boolean;
  /** Train even when a complete run with the same training part could be reused. */
  retrain?: boolean;
  /** Aborting it (Ctrl-C) stops after the current step, checkpoints, and marks the run interrupted. */
  signal?: AbortSignal;
  /** Where progress lines go (default console.log). */
  log?: (line: string) => void;
  /** Called after every training step (tests, interruption). */
  onStep?: (record: StepRecord) => void;
  /** Told how far each phase is (progress bars); the printed log lines do not depend on it. */
  progress?: ProgressReporter;
  /**
   * Evaluates the model (KID/FID, ...) after each epoch's checkpoint and once at the end, after
   * sampling. Numbers returned after an epoch go to `evaluations.jsonl` with the step and epoch;
   * those returned at the end go to the manifest summary.
   */
  evaluate?: (point: EvaluationPoint) => Promise<Record<string, number> | void>;
  /** Folder of the avatar cache (default `<project>/.cache/avatars`). */
  cacheDir?: string;
  /** The ddpm-lab checkout, for the git state in the manifest. */
  projectDir?: string;
  /**
   * Conditional runs: scores the samples of each guidance weight (the attribute judge's
   * accuracy per attribute, KID...); the numbers go to `guidance.md` and `guidance.json`.
   */
  scoreConditional?: ConditionalScorer;
  /**
   * Under Slurm: when `signal` aborted for the warning before the time limit, the run (after
   * its checkpoint, marked interrupted) records the requeue in its manifest and requeues the job.
   */
  requeue?: RequeueRequest;
}

/** How a run requeues its Slurm job (see {@linkcode RunOptions.requeue}). */
export interface RequeueRequest {
  /** The job `requeue` requeues (recorded in the manifest). */
  job: string;
  /** Whether the stop was the warning (rather than Ctrl-C or SIGTERM). */
  requested(): boolean;
  /** Requeues the job; throws with the reason when it cannot. */
  requeue(): Promise<void>;
}

/** What a run produced. */
export interface RunResult {
  /** The run folder (also set for a dry run: where it would go). */
  dir: string;
  /** Final status. */
  status: Manifest["status"] | "dry-run";
  /** The manifest written (absent for a dry run). */
  manifest?: Manifest;
  /** The Slurm job this interrupted run requeued, and the step it resumes from. */
  requeued?: { job: string; step: number };
}

/** The long phases of a run. */
export type ProgressPhase = "data" | "train" | "sample" | "evaluate";

/** What a training progress bar shows besides the count. */
export interface ProgressDetail {
  /** Epoch of the last step, 1-based. */
  epoch?: number;
  /** Epochs of the run. */
  epochs?: number;
  /** The training loss averaged over the last `LOSS_WINDOW` steps (./logs.ts). */
  loss?: number | null;
}

/** Where a run is, for a progress bar: `done` of `total` steps of a phase. */
export interface ProgressReporter {
  /**
   * Called as the images are rendered or decoded (`data`, images), after each training step
   * (`train`, steps, with the epoch and the loss), after each sampling step (`sample`, the steps
   * of all batches) and as an evaluation hook reports (`evaluate`).
   */
  update(phase: ProgressPhase, done: number, total: number, detail?: ProgressDetail): void;
}

/** What an evaluation hook sees: the network as the sampler does, and where training is. */
export interface EvaluationPoint {
  /** The resolved experiment. */
  config: Experiment;
  /** The run folder. */
  dir: string;
  /** Optimizer steps done. */
  step: number;
  /** Epoch of the last step (0-based). */
  epoch: number;
  /** Whether this is the evaluation at the end of the run. */
  final: boolean;
  /** The network (the EMA weights when the experiment keeps them), as the samplers see it. */
  denoise: Denoiser;
  /** The training images. */
  dataset: Dataset;
  /** For long evaluations: report `done` of `total` (images, say) to the progress display. */
  onProgress?: (done: number, total: number) => void;
}

/**
 * Trains and samples the experiment, writing its run folder; or describes it (`dryRun`). Bad
 * input fails before the folder is touched; a failure after that marks the run `failed`, and an
 * abort (Ctrl-C) checkpoints and marks it `interrupted`.
 */
export async function runExperiment(
  loaded: LoadedExperiment,
  options: RunOptions,
): Promise<RunResult> {
  const log = options.log ?? ((line: string) => console.log(line));
  const { config } = loaded;
  const dir = experimentFolder(config, options.outRoot);
  if (options.dryRun) {
    log(await describeRun(loaded, options.outRoot));
    return { dir, status: "dry-run" };
  }
  // Where the run is, for the message of a failure the user can act on (./failures.ts).
  const at: RunProgress = {
    loaded,
    outRoot: options.outRoot,
    dir,
    folder: options.resume ? "unchanged" : "none",
    checkpointStep: null,
    step: 0,
    totalSteps: null,
    perEpoch: null,
  };
  try {
    return await runInFolder(loaded, { ...options, log }, { dir, at });
  } catch (err) {
    throw (await explainFailure(err, at)) ?? err;
  }
}

/** {@linkcode runExperiment} past the dry run, keeping `at` current. */
async function runInFolder(
  loaded: LoadedExperiment,
  options: RunOptions & { log: (line: string) => void },
  where: { dir: string; at: RunProgress },
): Promise<RunResult> {
  const { log } = options;
  const { config } = loaded;
  const { dir, at } = where;
  const stopped = () => options.signal?.aborted ?? false;

  // One process per run folder (a second one for the same config and seed is refused).
  await using _lock = await acquireRunLock(dir, { log });
  // Everything that can fail on bad input happens before the run folder is touched, and a
  // complete run is refused before any data is loaded.
  const previous = options.resume ? await resumableManifest(dir) : null;
  if (!previous && !options.force) await refuseCompleteRun(dir);
  const backend = await initBackend(config.backend);
  const schedule = makeSchedule(config.schedule);
  log(`loading dataset (${config.dataset.kind})...`);
  const dataset = await loadDataset(config.dataset, {
    transform: config.transform,
    seed: config.seed,
    cacheDir: options.cacheDir,
    experimentFile: loaded.file,
    onProgress: phaseProgress("data", options),
  });
  log(`  ${dataset.source}`);
  await checkEvalInput(config, { dataset, experimentFile: loaded.file });
  // A conditional model: its attributes in the dataset, and what to sample (bad names fail here).
  const conditional = resolveConditioning(config, { labels: dataset.labels, file: loaded.file });
  const labelSizes = conditional?.labelSizes;
  const parameters = countParameters(modelShape(config.model, labelSizes));
  const hashes = { config: configHash(config), training: trainingHash(config) };
  const reuse = options.resume || options.retrain
    ? null
    : await findReusableTraining(options.outRoot, {
      hash: hashes.training,
      exclude: dir,
      contentHash: dataset.record.contentHash,
    });
  const plan = plannedSteps(dataset.count, config.train);
  Object.assign(at, { totalSteps: plan.total, perEpoch: plan.perEpoch });

  // Model, optimizer, weight average, and the gradient workers (an engine that cannot start
  // fails here, before the run folder is touched).
  const model = createModel(config.model, {
    rng: deriveRng(config.seed, "model/init"),
    labelSizes,
  });
  const optimizer = new Adam(model.params, config.optimizer);
  const ema = config.optimizer.ema ? new Ema(model.params, config.optimizer.ema) : null;
  let workers: GradientWorkers | undefined;
  let engine: SamplingEngine | undefined;
  let evaluator: RunEvaluator | null = null;
  let run: RunRecord | undefined;
  let requeued: RunResult["requeued"];
  try {
    workers = await startWorkers(config, { backend, labelSizes });

    // The run folder: config.json and a `running` manifest (or the interrupted run, resumed).
    const { alphaBarT, sqrtAlphaBarT } = terminalSignal(schedule);
    run = await RunRecord.open(dir, {
      loaded,
      hashes,
      backend,
      summary: {
        parameters,
        datasetSize: dataset.count,
        alphaBarT,
        sqrtAlphaBarT,
      },
      dataset: dataset.record,
      versions: { tfjs: tf.version_core },
      previous,
      force: options.force ?? false,
      projectDir: options.projectDir ?? new URL("../..", import.meta.url).pathname,
    });
    at.folder = "open";
    at.checkpointStep = run.checkpointStep;
    at.step = run.checkpointStep ?? 0;
    run.manifest.backend.workers = workers ? config.train.workers : 0;
    // Threads that compute: this one (one wasm thread) and one per gradient worker.
    if (backend.name === "wasm" || backend.name === "cpu") {
      run.manifest.backend.threads = (backend.threads ?? 1) + (workers ? config.train.workers : 0);
    }
    // The samplers and evaluations see the weight average when the experiment keeps one; a
    // conditional network without labels uses its null embedding (unconditional).
    const net = ema ? withParams(model, ema.params) : model;
    const denoise = samplingDenoiser(net, { workers });
    // The `eval` section (KID, FID, judge: eval.jsonl), unless the caller brings its own hook.
    evaluator = options.evaluate ? null : await RunEvaluator.start(config, {
      experimentFile: loaded.file,
      dataset,
      backend: backend.name,
      log,
      signal: options.signal,
    });
    const hook = options.evaluate ?? evaluator?.hook;
    // Evaluations during training run on tfjs; the final one on the sampling engine.
    const evaluate = async (
      point: { step: number; epoch: number; final: boolean },
      through: Denoiser = denoise,
    ) =>
      await hook?.({
        config,
        dir,
        ...point,
        denoise: through,
        dataset,
        onProgress: phaseProgress("evaluate", options),
      });
    if (!previous) await writeForwardFigure(dir, { dataset, schedule, seed: config.seed });

    // Training (Algorithm 1), or the checkpoint of a complete run with the same training part.
    let trained: { step: number; epoch: number };
    if (reuse) {
      log(`reusing the training of ${reuse.dir} (same training config; --retrain to train anew)`);
      trained = await run.reuseTraining(reuse.dir, { model, ema });
    } else {
      trained = await trainPhase({ model, optimizer, ema, workers }, {
        config,
        run,
        dataset,
        schedule,
        resume: previous !== null,
        ...(conditional
          ? {
            condition: {
              columns: conditional.conditioned.columns,
              pUncond: config.model.conditioning!.pUncond,
            },
          }
          : {}),
        ...(hook ? { evaluate } : {}),
        what: `on ${backend.name} (${parameters.toLocaleString("en-US")} parameters)`,
        at,
        options,
      });
    }
    at.step = trained.step;
    at.checkpointStep = run.checkpointStep;

    // Sampling (Algorithm 2 or DDIM) and the figures, with the EMA weights when there are some,
    // on the engine `sampler.engine` names (ONNX Runtime runs the exported checkpoint).
    run.manifest.summary.samplingSteps = samplingSteps(config.sampler, schedule.timesteps);
    at.phase = "sampling";
    if (!stopped()) {
      if (config.sampler.engine === "onnxruntime") {
        // ONNX Runtime does not use the tfjs gradient workers: free their memory before it
        // loads (should it fail to load, tfjs samples on this thread).
        workers?.close();
        workers = undefined;
      }
      engine = await createSamplingEngine(config, {
        tfjs: (condition) => samplingDenoiser(net, { workers, condition }),
        tfjsBackend: backend.name,
        checkpointDir: run.checkpointDir,
        size: dataset.size,
        ...(labelSizes ? { labelSizes } : {}),
        log,
      });
      run.manifest.engine = engine.info;
      await samplePhase(engine, {
        config,
        run,
        dataset,
        schedule,
        ...(conditional ? { conditional } : {}),
        weights: ema ? "EMA weights" : "",
        backend: backend.name,
        options,
      });
    }
    if (!stopped() && hook) {
      at.phase = "the final evaluation";
      const through = engine?.denoise ?? denoise;
      Object.assign(run.manifest.summary, await evaluate({ ...trained, final: true }, through));
    }
    at.phase = "writing loss.png and the manifest";
    await writeLossPlot(dir);
    // ... and to the end of the run (sampling and evaluation included).
    run.manifest.summary.peakRssMiB = peakRssMiB();
    // Slurm's warning: the requeue is recorded before it is asked for (the job is killed then).
    const requeue = stopped() && options.requeue?.requested() ? options.requeue : undefined;
    if (requeue) {
      const requeues = run.manifest.requeues ?? [];
      requeues.push({ at: new Date().toISOString(), step: trained.step, job: requeue.job });
      run.manifest.requeues = requeues;
    }
    await run.end(stopped() ? "interrupted" : "complete");
    if (requeue) {
      try {
        await requeue.requeue();
        requeued = { job: requeue.job, step: trained.step };
      } catch (err) {
        run.manifest.requeues!.pop();
        if (run.manifest.requeues!.length === 0) delete run.manifest.requeues;
        await run.save();
        log(`could not requeue Slurm job ${requeue.job}: ${(err as Error).message}`);
      }
    }
  } catch (err) {
    if (run === undefined) throw err;
    // The run folder is marked failed with the explanation the user will read.
    at.checkpointStep = run.checkpointStep;
    const failure = (await explainFailure(err, at)) ?? err;
    try {
      await run.end("failed", failure);
    } catch (endError) {
      if (failure instanceof RunFailure) throw unmarkedFailure(failure, endError);
      throw err;
    }
    throw failure;
  } finally {
    await engine?.close();
    workers?.close();
    evaluator?.dispose();
    model.dispose();
    optimizer.dispose();
    ema?.dispose();
  }
  log(`${run.manifest.status}: ${dir}`);
  return {
    dir,
    status: run.manifest.status,
    manifest: run.manifest,
    ...(requeued ? { requeued } : {}),
  };
}

/** What {@link trainPhase} needs of the run besides the networks. */
interface TrainPhase {
  config: Experiment;
  run: RunRecord;
  dataset: Dataset;
  schedule: ReturnType<typeof makeSchedule>;
  /** Resuming an interrupted run: training continues from its checkpoint. */
  resume: boolean;
  /** A conditional model's label columns and label dropout. */
  condition?: { columns: number[]; pUncond: number };
  /** The evaluation at the end of each epoch (the `eval` section or the caller's hook). */
  evaluate?: (
    at: { step: number; epoch: number; final: boolean },
  ) => Promise<Record<string, number> | void>;
  /** What the progress line says it trains on (backend, parameters). */
  what: string;
  /** Where the run is (the step done), for the message of a failure. */
  at: RunProgress;
  /** The run's options (log, signal, progress, onStep). */
  options: RunOptions & { log: (line: string) => void };
}

/**
 * Training (Algorithm 1) from step 0 or the run's checkpoint: the step log, checkpoints every
 * `train.checkpointEvery` epochs and at the end (also when stopped), evaluations at epoch ends.
 * Returns the step and epoch reached; the manifest's summary gets the loss figures.
 */
async function trainPhase(
  parts: { model: DenoiseModel; optimizer: Adam; ema: Ema | null; workers?: GradientWorkers },
  ctx: TrainPhase,
): Promise<{ step: number; epoch: number }> {
  const { model, optimizer, ema, workers } = parts;
  const { config, run, dataset, options } = ctx;
  const { log } = options;
  const saved = { model, optimizer, ema };
  const resumed = ctx.resume ? await loadCheckpoint(run.checkpointDir, saved) : null;
  const startStep = resumed?.step ?? 0;
  const steps = plannedSteps(dataset.count, config.train);
  const epochs = Math.ceil(steps.total / Math.max(1, steps.perEpoch));
  if (resumed) log(`resuming at step ${startStep} of ${steps.total}`);
  log(`training ${plural(steps.total, "step")} ${ctx.what}`);
  const trainLog = await TrainingLog.open(run.dir, {
    startStep,
    totalSteps: steps.total,
    epochs,
    logEvery: config.train.logEvery,
    previous: run.manifest.summary,
    log,
  });
  try {
    const result = await trainModel(model, {
      seed: config.seed,
      schedule: ctx.schedule,
      loss: config.loss,
      train: config.train,
      optimizer,
      model: config.model,
      optimizerConfig: config.optimizer,
      ema,
      workers,
      data: batchSource(dataset),
      ...(ctx.condition ? { condition: ctx.condition } : {}),
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
        if (endOfEpoch && ctx.evaluate) {
          const numbers = await ctx.evaluate({ step, epoch, final: false });
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

/** What {@link samplePhase} needs of the run besides the engine. */
interface SamplePhase {
  config: Experiment;
  run: RunRecord;
  dataset: Dataset;
  schedule: ReturnType<typeof makeSchedule>;
  /** A conditional run's label plan and conditioned attributes. */
  conditional?: ResolvedConditioning;
  /** Which weights sample, for the progress line ("EMA weights", or empty). */
  weights: string;
  /** The tfjs backend (the judge of `sampler.measure` runs on it). */
  backend: string;
  /** The run's options (log, signal, progress, scoreConditional). */
  options: RunOptions & { log: (line: string) => void };
}

/**
 * Sampling (Algorithm 2 or DDIM) on `engine` and the figures: the samples ({@link writeSamples}),
 * then the recovery figure; the sampling time goes to the manifest's summary.
 */
async function samplePhase(engine: SamplingEngine, ctx: SamplePhase): Promise<void> {
  const { config, run, dataset, schedule, options } = ctx;
  const { log } = options;
  // A conditional run samples its label plan's count (whole grid rows), not sampler.count.
  const count = ctx.conditional?.plan.count ?? config.sampler.count;
  const how = describeSampler({ ...config.sampler, count }, schedule.timesteps);
  log(`sampling ${count} images (${how}${ctx.weights ? `, ${ctx.weights}` : ""})`);
  const started = performance.now();
  const done = await writeSamples(engine, {
    config,
    dir: run.dir,
    schedule,
    size: dataset.size,
    backend: ctx.backend,
    ...(ctx.conditional ? { conditional: { ...ctx.conditional, dataset } } : {}),
    options,
  });
  run.manifest.summary.sampleSeconds = +((performance.now() - started) / 1000).toFixed(1);
  if (done) await writeRecoveryFigure(run.dir, engine.denoise, { config, dataset, schedule, log });
}

/** What {@link writeSamples} needs besides the engine. */
export interface SampleFiguresContext {
  config: Experiment;
  /** Where the figures go. */
  dir: string;
  schedule: ReturnType<typeof makeSchedule>;
  /** Image side. */
  size: number;
  /** The tfjs backend (the judge of `sampler.measure` runs on it). */
  backend: string;
  /** A conditional model's resolved conditioning and its dataset (labels, the judge's data). */
  conditional?: ResolvedConditioning & { dataset: Dataset };
  /** Progress lines, stop signal, progress bars, a scorer replacing `sampler.measure`'s. */
  options: Pick<RunOptions, "signal" | "progress" | "scoreConditional"> & {
    log: (line: string) => void;
  };
}

/**
 * The samples of `config.sampler` on `engine` into `ctx.dir` (`run` and `sample` share it):
 * samples.png and the trajectory, or for a conditional model one grid per guidance weight and,
 * when `sampler.measure` asks, guidance.md. Returns false when stopped before the end.
 */
export async function writeSamples(
  engine: SamplingEngine,
  ctx: SampleFiguresContext,
): Promise<boolean> {
  const { config, dir, schedule, size, options } = ctx;
  const { log } = options;
  const stopped = () => options.signal?.aborted ?? false;
  const sampleOptions = {
    config,
    size,
    log,
    signal: options.signal,
    onProgress: options.progress
      ? (done: number, total: number) => options.progress!.update("sample", done, total)
      : undefined,
  };
  if (!ctx.conditional) {
    const sampled = await sampleImages(engine.denoise, schedule, sampleOptions);
    if (sampled) await writeSampleFigures(dir, sampled, { config, size });
    return sampled !== null && !stopped();
  }
  const { plan, conditioned, dataset } = ctx.conditional;
  // `sampler.measure`: the judge and KID, unless the caller brings its own scorer.
  const measure = options.scoreConditional
    ? null
    : await conditionalScorer(config, { dataset, backend: ctx.backend, log });
  try {
    const rows = await sampleConditional({ engine, schedule, plan }, {
      ...sampleOptions,
      dir,
      stopped,
      score: options.scoreConditional ?? measure?.score,
      names: conditioned.attributes.map((a) => a.name),
      dataset,
    });
    if (rows === null || stopped()) return false;
    if (rows.length > 0) await writeGuidanceTable(dir, rows);
    return true;
  } finally {
    measure?.dispose();
  }
}

/**
 * The `onProgress(done, total)` of a phase: the reporter's, or plain lines (`loading 3000/12000
 * images, ...`) every few seconds.
 */
function phaseProgress(
  phase: "data" | "evaluate",
  options: { progress?: ProgressReporter; log: (line: string) => void },
): (done: number, total: number) => void {
  const { progress } = options;
  if (progress) return (done, total) => progress.update(phase, done, total);
  return progressReporter(phase === "data" ? "  loading" : "  evaluating", { log: options.log });
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

/**
 * The gradient workers `train.workers` asks for, on the backends that run them (none elsewhere).
 * Throws a {@linkcode RunFailure} saying how to run without them when they cannot start.
 */
export async function startWorkers(
  config: Experiment,
  options: { backend: BackendInfo; labelSizes?: number[] },
): Promise<GradientWorkers | undefined> {
  const { backend, labelSizes } = options;
  const count = config.train.workers;
  if (count === 0 || (backend.name !== "wasm" && backend.name !== "cpu")) {
    return undefined;
  }
  try {
    return await GradientWorkers.start({
      count,
      model: config.model,
      backend: backend.name,
      ...(labelSizes ? { labelSizes } : {}),
    });
  } catch (err) {
    const why = err instanceof Error ? err.message.split("\n")[0] : String(err);
    throw new RunFailure(
      `the ${plural(count, "gradient worker")} of train.workers could not start on ` +
        `${backend.name}: ${why}`,
      {
        kept: "nothing: they start before the run folder is written",
        todo: [
          "run on this thread alone with --set train.workers=0 (a different config: its bytes " +
          "differ from a run with workers), or free memory for the workers' wasm instances",
        ],
        cause: err,
      },
    );
  }
}

/**
 * The gradient workers that share sampling for `sample` and `eval`: none when ONNX Runtime
 * samples (it does not use them; should it fail to load, tfjs samples on this thread).
 */
export async function samplingWorkers(
  config: Experiment,
  options: { backend: BackendInfo; labelSizes?: number[] },
): Promise<GradientWorkers | undefined> {
  if (config.sampler.engine === "onnxruntime") return undefined;
  return await startWorkers(config, options);
}

/**
 * A conditional run's sampling: for each guidance weight w of `sampler.guidance` (default
 * [0]), the plan's labels sampled from the same `sample/noise` stream (so the grids differ only
 * by w), written as `samples.png` (the first w) and `samples-w<w>.png`, then scored. Returns the
 * table rows (empty without a scorer), or null when stopped.
 */
async function sampleConditional(
  parts: {
    engine: SamplingEngine;
    schedule: ReturnType<typeof makeSchedule>;
    plan: LabelPlan;
  },
  options: Parameters<typeof sampleImages>[2] & {
    dir: string;
    stopped: () => boolean;
    score?: ConditionalScorer;
    names: string[];
    dataset: Dataset;
  },
): Promise<GuidanceRow[] | null> {
  const { engine, schedule, plan } = parts;
  const { config, size, dir } = options;
  const guidance = config.sampler.guidance ?? [0];
  const a = options.names.length;
  const rows: GuidanceRow[] = [];
  for (const [k, w] of guidance.entries()) {
    options.log(`  guidance w = ${w}: ${plan.count} images (${plan.rows.length} rows)`);
    const sampled: SampledImages | null = await sampleImages(engine.denoise, schedule, {
      ...options,
      count: plan.count,
      trajectory: k === 0,
      batchDenoiser: ({ from, to }) =>
        guidedDenoiser({
          conditional: engine.conditioned({ labels: plan.labels.subarray(from * a, to * a) }),
          unconditional: engine.denoise,
        }, w),
    });
    if (!sampled || options.stopped()) return null;
    const figure = { config, size, plan };
    if (k === 0) {
      await writeConditionalFigure(dir, sampled, { ...figure, file: "samples.png" });
      await writeSampleFigures(dir, sampled, {
        config,
        size,
        trajectoryOnly: true,
      });
    }
    if (guidance.length > 1) {
      await writeConditionalFigure(dir, sampled, { ...figure, file: `samples-w${w}.png` });
    }
    if (options.score) {
      const requested: Record<string, Int32Array> = {};
      options.names.forEach((name, j) => {
        requested[name] = Int32Array.from({ length: plan.count }, (_, i) => plan.labels[i * a + j]);
      });
      const metrics = await options.score({
        w,
        images: sampled.images,
        count: plan.count,
        size,
        requested,
        dataset: options.dataset,
      });
      options.log(
        `  w = ${w}: ` + Object.entries(metrics).map(([n, v]) => `${n} ${v.toFixed(3)}`).join(", "),
      );
      rows.push({ w, metrics });
    }
  }
  return rows;
}

/**
 * The network as the samplers see it: tfjs on this thread, or sharded over the gradient workers.
 * A sampler engine choice (ONNX Runtime, ...) picks its denoiser here.
 */
export function samplingDenoiser(
  net: DenoiseModel,
  options: { workers: GradientWorkers | undefined; condition?: ConditionInput },
): Denoiser {
  const { workers, condition } = options;
  if (workers) return (x, t) => workers.predictSharded(net, { x, t, condition });
  return (x, t) => tf.tidy(() => net.predict(x, t, { condition }));
}
