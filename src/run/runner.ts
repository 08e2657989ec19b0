/**
 * The runner: one experiment, top to bottom, like nanoGPT's train.py: the run opened (backend,
 * data, model, optimizer: ./session.ts), its folder, training (or a reused training), sampling,
 * the final evaluation, the end. Each phase is a call into the file that owns it:
 * ./train_phase.ts, ./sample_phase.ts, ./finish.ts; the run folder's life cycle is
 * ./lifecycle.ts, the pictures ./figures.ts, the types ./types.ts.
 * @module
 */
import { configHash, type LoadedExperiment } from "../config/mod.ts";
import { terminalSignal } from "../diffusion/schedule.ts";
import { checkEvalInput } from "../eval/mod.ts";
import { tf } from "../tf.ts";
import { plannedSteps } from "../train/mod.ts";
import { experimentFolder } from "./describe.ts";
import { explainFailure, type RunProgress, startProgress } from "./failures.ts";
import { phaseProgress } from "./progress.ts";
import { RunEvaluations } from "./evaluation_phase.ts";
import { writeForwardFigure } from "./figures.ts";
import { failRun, finishRun } from "./finish.ts";
import { refuseCompleteRun } from "./folder.ts";
import { resumableManifest, RunRecord } from "./lifecycle.ts";
import { acquireRunLock } from "./lock.ts";
import type { Manifest } from "./manifest.ts";
import { samplePhase } from "./sample_phase.ts";
import { RunSession } from "./session.ts";
import { trainPhase } from "./train_phase.ts";
import { trainingHash } from "./training_cache.ts";
import type { RunContext, RunOptions, RunResult } from "./types.ts";

/**
 * Trains and samples the experiment, writing its run folder. Bad input fails before the folder
 * is touched; a failure after that marks the run `failed`, and an abort (Ctrl-C) checkpoints
 * and marks it `interrupted`.
 */
export async function runExperiment(
  loaded: LoadedExperiment,
  runOptions: RunOptions,
): Promise<RunResult> {
  const options: RunContext = { ...runOptions, log: runOptions.log ?? ((l) => console.log(l)) };
  const { config } = loaded;
  const { log, outRoot } = options;
  const dir = experimentFolder(config, outRoot);
  const stopped = () => options.signal?.aborted ?? false;
  // Where the run is, for the message of a failure the user can act on (./failures.ts).
  const at = startProgress(loaded, { outRoot, dir, resume: options.resume });
  try {
    // One process per run folder; a complete run is refused before any data is loaded.
    await using _lock = await acquireRunLock(dir, { log });
    const previous = options.resume ? await resumableManifest(dir) : null;
    if (!previous && !options.force) await refuseCompleteRun(dir);
    // Backend, data, conditioning, model, Adam, EMA, gradient workers: bad input fails here.
    await using session = await RunSession.open(loaded, {
      purpose: "train",
      cacheDir: options.cacheDir,
      onDataProgress: phaseProgress("data", options),
      log,
    });
    await checkEvalInput(config, { dataset: session.dataset!, experimentFile: loaded.file });

    // The run folder: config.json and a `running` manifest (or the interrupted run, resumed).
    const run = await openRunFolder(session, { loaded, previous, options, at });
    try {
      // The caller's evaluation hook, or the `eval` section's (KID, FID, judge: eval.jsonl).
      using evaluations = await RunEvaluations.start(session, {
        dir,
        experimentFile: loaded.file,
        options,
      });
      const { dataset, schedule } = session;
      if (!previous) {
        await writeForwardFigure(dir, { dataset: dataset!, schedule, seed: config.seed });
      }

      // Training (Algorithm 1), or the checkpoint of a complete run with the same training part.
      const trained = await trainPhase(session, { run, previous, evaluations, at, options });
      Object.assign(at, { step: trained.step, checkpointStep: run.checkpointStep });

      // Sampling (Algorithm 2 or DDIM) and its figures, on the engine `sampler.engine` names.
      at.phase = "sampling";
      await samplePhase(session, { run, options });
      at.phase = "the final evaluation";
      if (!stopped()) await evaluations.final(run, trained);
      at.phase = "writing loss.png and the manifest";
      const gpu = session.engineInfo;
      if (gpu) run.manifest.backend.gpu = gpu;
      const { requeue } = options;
      const result = await finishRun(run, { step: trained.step, stopped: stopped(), requeue, log });
      log(`${result.status}: ${dir}`);
      return result;
    } catch (err) {
      throw await failRun(run, err, at);
    }
  } catch (err) {
    throw (await explainFailure(err, at)) ?? err;
  }
}

/**
 * Opens the run folder's record for the session (config.json and a `running` manifest, or the
 * interrupted run, resumed) and tells `at` where the run is.
 */
async function openRunFolder(
  session: RunSession,
  ctx: {
    loaded: LoadedExperiment;
    previous: Manifest | null;
    options: RunContext;
    at: RunProgress;
  },
): Promise<RunRecord> {
  const { config, backend, dataset } = session;
  const { at, options } = ctx;
  const plan = plannedSteps(dataset!.count, config.train);
  Object.assign(at, { totalSteps: plan.total, perEpoch: plan.perEpoch });
  const { alphaBarT, sqrtAlphaBarT } = terminalSignal(session.schedule);
  const run = await RunRecord.open(at.dir, {
    loaded: ctx.loaded,
    hashes: { config: configHash(config), training: trainingHash(config) },
    backend,
    summary: {
      parameters: session.parameters,
      datasetSize: dataset!.count,
      alphaBarT,
      sqrtAlphaBarT,
    },
    dataset: dataset!.record,
    versions: { tfjs: tf.version_core },
    previous: ctx.previous,
    force: options.force ?? false,
    projectDir: options.projectDir ?? new URL("../..", import.meta.url).pathname,
  });
  Object.assign(at, { folder: "open", checkpointStep: run.checkpointStep });
  at.step = run.checkpointStep ?? 0;
  const workers = session.workers ? config.train.workers : 0;
  run.manifest.backend.workers = workers;
  // Threads that compute: this one (one wasm thread) and one per gradient worker.
  if (backend.name === "wasm" || backend.name === "cpu") {
    run.manifest.backend.threads = (backend.threads ?? 1) + workers;
  }
  return run;
}
