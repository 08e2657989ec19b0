/**
 * The runner: composes the modules an experiment names (data, schedule, model, loss, optimizer,
 * train, sampler) into one run and writes its folder. It holds no maths of its own.
 * @module
 */
import { join } from "node:path";
import type { Experiment } from "../../schemas/experiment.ts";
import { type BackendInfo, initBackend } from "../backend/mod.ts";
import { configHash, formatConfigSummary, type LoadedExperiment } from "../config/mod.ts";
import { type Dataset, loadDataset, makeBatch } from "../data/mod.ts";
import { listImages } from "../data/folder.ts";
import { qSample } from "../diffusion/forward.ts";
import { generate, samplingSteps, visitedTimesteps } from "../diffusion/generate.ts";
import { recover, recoveryGridImages } from "../diffusion/recovery.ts";
import type { Denoiser } from "../diffusion/sampler.ts";
import { trajectoryPlan, TrajectoryRecorder } from "../diffusion/trajectory.ts";
import { trajectoryGif, trajectoryStrip } from "../io/animation.ts";
import { makeSchedule, type Schedule, terminalSignal } from "../diffusion/schedule.ts";
import { UserError } from "../errors.ts";
import { writeFileAtomic } from "../io/files.ts";
import { makeGrid, writePng } from "../io/image.ts";
import { countParameters, createModel, type DenoiseModel, withParams } from "../model/mod.ts";
import { createSamplingEngine, type SamplingEngine } from "../onnx/mod.ts";
import { deriveRng } from "../rng.ts";
import { tf } from "../tf.ts";
import { loadCheckpoint, saveCheckpoint } from "../train/checkpoint.ts";
import { GradientWorkers } from "../train/parallel/mod.ts";
import {
  Adam,
  type BatchSource,
  Ema,
  plannedSteps,
  type StepRecord,
  trainModel,
} from "../train/mod.ts";
import { prepareRunFolder, runFolder } from "./folder.ts";
import {
  gitState,
  hashArtifacts,
  type Manifest,
  readManifest,
  softwareVersions,
  verifyArtifacts,
  writeManifest,
} from "./manifest.ts";
import { findReusableTraining, trainingHash } from "./training_cache.ts";

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
  /** Called after every training step (progress bars, tests). */
  onStep?: (record: StepRecord) => void;
  /** Folder of the avatar cache (default `<project>/.cache/avatars`). */
  cacheDir?: string;
  /** The ddpm-lab checkout, for the git state in the manifest. */
  projectDir?: string;
}

/** What a run produced. */
export interface RunResult {
  /** The run folder (also set for a dry run: where it would go). */
  dir: string;
  /** Final status. */
  status: Manifest["status"] | "dry-run";
  /** The manifest written (absent for a dry run). */
  manifest?: Manifest;
}

/** Number of images in the configured dataset, without decoding any. */
async function datasetSize(config: Experiment, file: string): Promise<number> {
  if (config.dataset.kind === "avatars") return config.dataset.count;
  const n = (await listImages(config.dataset.path, { configFile: file })).length;
  return config.dataset.limit === undefined ? n : Math.min(n, config.dataset.limit);
}

/** The dry-run report: resolved config, dataset size, parameters, ᾱ_T and the step count. */
export async function describeRun(loaded: LoadedExperiment, outRoot: string): Promise<string> {
  const { config } = loaded;
  const schedule = makeSchedule(config.schedule);
  const { alphaBarT, sqrtAlphaBarT } = terminalSignal(schedule);
  const count = await datasetSize(config, loaded.file);
  const steps = plannedSteps(count, config.train);
  const dir = runFolder(outRoot, {
    name: config.name,
    seed: config.seed,
    hash: configHash(config),
  });
  const reusable = await findReusableTraining(outRoot, {
    hash: trainingHash(config),
    exclude: dir,
  });
  return [
    formatConfigSummary(config),
    "",
    `dataset size      ${count} images`,
    `model parameters  ${countParameters(config.model).toLocaleString("en-US")}`,
    `alpha_bar_T       ${alphaBarT.toPrecision(4)}   sqrt(alpha_bar_T) ${
      sqrtAlphaBarT.toPrecision(4)
    }` +
    (sqrtAlphaBarT > 0.1 ? "   (x_T still holds visible signal of x_0)" : ""),
    `training steps    ${steps.total} (${steps.perEpoch} per epoch)` +
    (reusable ? `; would reuse the training of ${reusable.dir}` : ""),
    `run folder        ${dir}`,
  ].join("\n");
}

function batchSource(dataset: Dataset, config: Experiment): BatchSource {
  return {
    count: dataset.count,
    shape: [dataset.size, dataset.size, dataset.channels],
    flip: config.transform.horizontalFlip,
    batch: (indices, flips) =>
      makeBatch(dataset, indices, { flips: Array.from(flips, (f) => f === 1) }),
  };
}

/** The notebook's picture: image 0 noised at 64 evenly spaced t (8 per row). */
async function forwardFigure(
  dataset: Dataset,
  schedule: Schedule,
  seed: number,
): Promise<Float32Array> {
  const n = 64;
  const T = schedule.timesteps;
  const steps = Int32Array.from({ length: n }, (_, i) => Math.floor((i * (T - 1)) / (n - 1)));
  const shape: [number, number, number, number] = [n, dataset.size, dataset.size, 3];
  const x0 = makeBatch(dataset, new Int32Array(n));
  const noise = deriveRng(seed, "figures/forward").normal(x0.length);
  const out = tf.tidy(() =>
    qSample(tf.tensor4d(x0, shape), tf.tensor4d(noise, shape), { schedule, steps })
  );
  const data = (await out.data()) as Float32Array;
  out.dispose();
  return data;
}

/** Samples `sampler.count` images in batches; records the trajectory of the first batch. */
async function sampleImages(
  denoise: Denoiser,
  schedule: Schedule,
  options: { config: Experiment; size: number; log: (line: string) => void; signal?: AbortSignal },
): Promise<{ images: Float32Array; trajectory: TrajectoryRecorder | null } | null> {
  const { sampler, seed, model } = options.config;
  const rng = deriveRng(seed, "sample/noise");
  const { size } = options;
  const c = model.channels;
  const T = schedule.timesteps;
  const trajectory = sampler.trajectory
    ? new TrajectoryRecorder(trajectoryPlan(visitedTimesteps(sampler, T), sampler.trajectory), {
      count: sampler.trajectory.count,
    })
    : null;
  const total = samplingSteps(sampler, T);
  const out = new Float32Array(sampler.count * size * size * c);
  for (let start = 0; start < sampler.count; start += sampler.batchSize) {
    const n = Math.min(sampler.batchSize, sampler.count - start);
    const started = performance.now();
    const record = start === 0 && trajectory ? trajectory.record : null;
    let done = 0;
    const x = await generate(denoise, schedule, {
      shape: [n, size, size, c],
      sampler,
      prediction: model.prediction,
      rng,
      onStart: record ?? undefined,
      onStep: async (t, state) => {
        if (record) await record(t, state);
        done++;
        if (done % Math.max(1, Math.floor(total / 4)) === 0) {
          options.log(
            `  sampling images ${start + 1}-${start + n}: step ${done}/${total} (t=${t})`,
          );
        }
        await new Promise((r) => setTimeout(r, 0)); // let signals through
      },
    });
    out.set((await x.data()) as Float32Array, start * size * size * c);
    x.dispose();
    if (options.signal?.aborted) return null;
    const seconds = (performance.now() - started) / 1000;
    options.log(`  sampled ${start + n}/${sampler.count} (${seconds.toFixed(1)} s)`);
  }
  return { images: out, trajectory };
}

/** recovery.png (seed 002): real images noised to each t, then denoised with β and β̃. */
async function recoveryFigure(
  denoise: Denoiser,
  schedule: Schedule,
  options: { config: Experiment; dataset: Dataset; dir: string; log: (line: string) => void },
): Promise<void> {
  const { config, dataset } = options;
  if (!config.recovery) return;
  const { count, t, stepNoise } = config.recovery;
  const n = Math.min(count, dataset.count);
  const size = dataset.size;
  options.log(`recovery: ${n} images noised to t = ${t.join(", ")}, denoised with beta and beta~`);
  const x0 = tf.tensor4d(makeBatch(dataset, Int32Array.from({ length: n }, (_, i) => i)), [
    n,
    size,
    size,
    3,
  ]);
  const rows = await recover(denoise, schedule, {
    x0,
    t,
    rng: deriveRng(config.seed, "recovery/noise"),
    stepNoise,
    prediction: config.model.prediction,
    clipX0: config.sampler.clipX0,
    onStep: () => new Promise((r) => setTimeout(r, 0)),
  });
  x0.dispose();
  const images = recoveryGridImages(rows, { count: n });
  await writePng(
    join(options.dir, "recovery.png"),
    makeGrid(images, {
      count: rows.length * n * 4,
      height: size,
      width: size,
      channels: 3,
      columns: 4,
    }),
  );
}

/** The metrics.jsonl lines of steps <= `step` (resume keeps them and appends the rest). */
async function keptLines(path: string, step: number): Promise<string> {
  let text = "";
  try {
    text = await Deno.readTextFile(path);
  } catch {
    return "";
  }
  const lines = text.split("\n").filter((l) => l !== "" && JSON.parse(l).step <= step);
  return lines.map((l) => l + "\n").join("");
}

/** Opens (or re-opens, keeping the first `step` steps) a JSON-lines file for appending. */
async function openLog(path: string, keepUpTo: number): Promise<Deno.FsFile> {
  const kept = keepUpTo > 0 ? await keptLines(path, keepUpTo) : "";
  await Deno.writeTextFile(path, kept);
  return await Deno.open(path, { append: true });
}

/** Where an existing run folder stands before `--resume` continues it. */
async function resumableManifest(dir: string): Promise<Manifest> {
  const manifest = await readManifest(dir);
  if (manifest === null) {
    throw new UserError(`--resume: there is no run of this experiment and seed at ${dir}`, {
      expected: "an interrupted run folder (start the run without --resume)",
    });
  }
  if (manifest.status === "complete") {
    throw new UserError(`--resume: the run at ${dir} is already complete`, {
      expected: "an interrupted or failed run (use --force to run it again)",
    });
  }
  const problems = await verifyArtifacts(dir, { manifest, prefix: "checkpoint/" });
  if (problems.length > 0) {
    throw new UserError(
      `--resume: the checkpoint of ${dir} does not match its manifest and was not loaded:\n  ` +
        problems.join("\n  "),
      { expected: "an intact checkpoint (run again with --force to start over)" },
    );
  }
  return manifest;
}

/** Trains and samples the experiment, writing its run folder; or describes it (`dryRun`). */
export async function runExperiment(
  loaded: LoadedExperiment,
  options: RunOptions,
): Promise<RunResult> {
  const log = options.log ?? ((line: string) => console.log(line));
  const { config } = loaded;
  const hash = configHash(config);
  const dir = runFolder(options.outRoot, { name: config.name, seed: config.seed, hash });
  if (options.dryRun) {
    log(await describeRun(loaded, options.outRoot));
    return { dir, status: "dry-run" };
  }

  // Everything that can fail on bad input happens before the run folder is touched.
  const previous = options.resume ? await resumableManifest(dir) : null;
  const backend: BackendInfo = await initBackend(config.backend);
  const schedule = makeSchedule(config.schedule);
  log(`loading dataset (${config.dataset.kind})...`);
  const dataset = await loadDataset(config.dataset, {
    transform: config.transform,
    seed: config.seed,
    cacheDir: options.cacheDir,
    experimentFile: loaded.file,
  });
  log(`  ${dataset.source}`);
  const tHash = trainingHash(config);
  const reuse = options.resume || options.retrain
    ? null
    : await findReusableTraining(options.outRoot, { hash: tHash, exclude: dir });
  if (!previous) await prepareRunFolder(dir, { force: options.force ?? false });

  const { alphaBarT, sqrtAlphaBarT } = terminalSignal(schedule);
  const manifest: Manifest = previous
    ? {
      ...previous,
      status: "running",
      error: undefined,
      resumedAt: [...(previous.resumedAt ?? []), new Date().toISOString()],
    }
    : {
      format: 1,
      name: config.name,
      seed: config.seed,
      configHash: hash,
      trainingHash: tHash,
      status: "running",
      source: { file: loaded.file, chain: loaded.chain, overrides: loaded.overrides },
      versions: softwareVersions(),
      backend: { ...backend },
      git: await gitState(options.projectDir ?? new URL("../..", import.meta.url).pathname),
      startedAt: new Date().toISOString(),
      summary: {
        parameters: countParameters(config.model),
        datasetSize: dataset.count,
        alphaBarT,
        sqrtAlphaBarT,
      },
      artifacts: {},
      volatileArtifacts: {},
    };
  if (!previous) {
    await writeFileAtomic(join(dir, "config.json"), JSON.stringify(config, null, 2) + "\n");
  }
  await writeManifest(dir, manifest);

  let workers: GradientWorkers | undefined;
  const model = createModel(config.model, { rng: deriveRng(config.seed, "model/init") });
  const optimizer = new Adam(model.params, config.optimizer);
  const ema = config.optimizer.ema ? new Ema(model.params, config.optimizer.ema) : null;
  const checkpointDir = join(dir, "checkpoint");
  const checkpoint = async (step: number, epoch: number) => {
    await saveCheckpoint(checkpointDir, { model, optimizer, ema, state: { step, epoch } });
    Object.assign(manifest, await hashArtifacts(dir));
    await writeManifest(dir, manifest);
  };
  let engine: SamplingEngine | undefined;
  try {
    if (config.train.workers > 0 && (backend.name === "wasm" || backend.name === "cpu")) {
      workers = await GradientWorkers.start({
        count: config.train.workers,
        model: config.model,
        backend: backend.name,
      });
    }
    manifest.backend.workers = workers ? config.train.workers : 0;
    const size = dataset.size;
    const grid = (images: Float32Array, count: number, columns: number) =>
      makeGrid(images, { count, height: size, width: size, channels: 3, columns });
    if (!previous) {
      const forward = await forwardFigure(dataset, schedule, config.seed);
      await writePng(join(dir, "forward.png"), grid(forward, 64, 8));
    }

    if (reuse) {
      await reuseTraining(reuse.dir, { dir, model, ema, manifest, log });
    } else {
      await train(model, {
        config,
        dir,
        dataset,
        schedule,
        optimizer,
        manifest,
        checkpoint,
        ema,
        workers,
        startFrom: previous ? await loadCheckpoint(checkpointDir, { model, optimizer, ema }) : null,
        options: { ...options, log },
        backend,
      });
    }

    // Sampling uses the weight average when the experiment keeps one.
    const net = ema ? withParams(model, ema.params) : model;
    if (config.sampler.engine === "onnxruntime") {
      // ONNX Runtime does not use the tfjs gradient workers: free their memory before it loads
      // (should it fail to load, tfjs samples on this thread).
      workers?.close();
      workers = undefined;
    }
    const shared = workers;
    engine = await createSamplingEngine(config, {
      tfjs: shared
        ? (xt, t) => shared.predictSharded(net, xt, t)
        : (xt, t) => tf.tidy(() => net.predict(xt, t)),
      tfjsBackend: backend.name,
      checkpointDir,
      size,
      log,
    });
    manifest.engine = engine.info;
    const denoise = engine.denoise;
    manifest.summary.samplingSteps = samplingSteps(config.sampler, schedule.timesteps);
    let sampled: Awaited<ReturnType<typeof sampleImages>> = null;
    if (!options.signal?.aborted) {
      log(`sampling ${config.sampler.count} images (${describeSampler(config, schedule)})`);
      sampled = await sampleImages(denoise, schedule, {
        config,
        size,
        log,
        signal: options.signal,
      });
    }
    if (sampled) {
      const { count, gridColumns, trajectory } = config.sampler;
      await writePng(join(dir, "samples.png"), grid(sampled.images, count, gridColumns));
      if (sampled.trajectory && trajectory) {
        const layout = { count: trajectory.count, height: size, width: size, channels: 3 as const };
        const strip = trajectoryStrip(sampled.trajectory.strip(), layout);
        await writePng(join(dir, "trajectory.png"), strip);
        if (trajectory.gifFrames > 0) {
          const gif = await trajectoryGif(sampled.trajectory.gif(), {
            ...layout,
            delayMs: trajectory.gifDelayMs,
          });
          await writeFileAtomic(join(dir, "trajectory.gif"), gif);
        }
      }
      if (!options.signal?.aborted) {
        await recoveryFigure(denoise, schedule, { config, dataset, dir, log });
      }
    }
    manifest.status = options.signal?.aborted ? "interrupted" : "complete";
  } catch (err) {
    manifest.status = "failed";
    manifest.error = err instanceof Error ? err.message : String(err);
    throw err;
  } finally {
    await engine?.close();
    workers?.close();
    model.dispose();
    optimizer.dispose();
    ema?.dispose();
    manifest.endedAt = new Date().toISOString();
    Object.assign(manifest, await hashArtifacts(dir));
    await writeManifest(dir, manifest);
  }
  log(`${manifest.status}: ${dir}`);
  return { dir, status: manifest.status, manifest };
}

/** Copies the checkpoint and metrics of a complete run with the same training part. */
async function reuseTraining(
  source: string,
  target: {
    dir: string;
    model: DenoiseModel;
    ema: Ema | null;
    manifest: Manifest;
    log: (line: string) => void;
  },
): Promise<void> {
  const from = (await readManifest(source))!;
  target.log(`reusing the training of ${source} (same training config; --retrain to train anew)`);
  await Deno.mkdir(join(target.dir, "checkpoint"), { recursive: true });
  for (const rel of Object.keys(from.artifacts)) {
    // model.onnx is not training output: the sampling engine exports it again when needed.
    if (
      (rel.startsWith("checkpoint/") && rel !== "checkpoint/model.onnx") || rel === "metrics.jsonl"
    ) {
      await Deno.copyFile(join(source, rel), join(target.dir, rel));
    }
  }
  await loadCheckpoint(join(target.dir, "checkpoint"), { model: target.model, ema: target.ema });
  target.manifest.reusedTraining = { dir: source, name: from.name, configHash: from.configHash };
  for (const key of ["steps", "finalLoss", "minLoss", "trainSeconds"]) {
    target.manifest.summary[key] = from.summary[key] ?? null;
  }
}

interface TrainContext {
  config: Experiment;
  dir: string;
  dataset: Dataset;
  schedule: Schedule;
  optimizer: Adam;
  ema: Ema | null;
  workers: GradientWorkers | undefined;
  manifest: Manifest;
  checkpoint: (step: number, epoch: number) => Promise<void>;
  startFrom: { step: number; epoch: number } | null;
  options: RunOptions & { log: (line: string) => void };
  backend: BackendInfo;
}

/** Runs the training loop with logging, metrics, periodic checkpoints and interruption. */
async function train(model: DenoiseModel, ctx: TrainContext): Promise<void> {
  const { config, dir, dataset, manifest, options } = ctx;
  const log = options.log;
  const steps = plannedSteps(dataset.count, config.train);
  const startStep = ctx.startFrom?.step ?? 0;
  if (ctx.startFrom) log(`resuming at step ${startStep} of ${steps.total}`);
  log(
    `training ${steps.total} steps on ${ctx.backend.name}` +
      ` (${countParameters(config.model).toLocaleString("en-US")} parameters)`,
  );
  const metrics = await openLog(join(dir, "metrics.jsonl"), startStep);
  const timings = await openLog(join(dir, "timings.jsonl"), startStep);
  const encoder = new TextEncoder();
  const trainStart = performance.now();
  let windowStart = trainStart;
  let windowLoss = 0;
  let windowSteps = 0;
  let last: StepRecord | null = null;
  let minLoss = Number(manifest.summary.minLoss ?? Infinity);
  try {
    const result = await trainModel(model, {
      seed: config.seed,
      schedule: ctx.schedule,
      loss: config.loss,
      train: config.train,
      optimizer: ctx.optimizer,
      model: config.model,
      optimizerConfig: config.optimizer,
      ema: ctx.ema,
      workers: ctx.workers,
      data: batchSource(dataset, config),
      startStep,
      shouldStop: () => options.signal?.aborted ?? false,
      onStep: async (record) => {
        const { step, epoch, loss } = record;
        last = record;
        minLoss = Math.min(minLoss, loss);
        windowLoss += loss;
        windowSteps++;
        await metrics.write(encoder.encode(JSON.stringify({ step, epoch, loss }) + "\n"));
        if (step % config.train.logEvery === 0 || step === steps.total) {
          const now = performance.now();
          const perStep = (now - windowStart) / 1000 / windowSteps;
          const seconds = +((now - trainStart) / 1000).toFixed(3);
          await timings.write(encoder.encode(JSON.stringify({ step, seconds }) + "\n"));
          log(
            `step ${step}/${steps.total} [epoch ${epoch}] loss ${
              (windowLoss / windowSteps).toFixed(4)
            }  ${perStep.toFixed(2)} s/step  eta ${formatDuration(perStep * (steps.total - step))}`,
          );
          windowStart = now;
          windowLoss = 0;
          windowSteps = 0;
        }
        const endOfEpoch = step % steps.perEpoch === 0;
        if (endOfEpoch && (epoch + 1) % config.train.checkpointEvery === 0 && step < steps.total) {
          await ctx.checkpoint(step, epoch);
        }
        options.onStep?.(record);
        await new Promise((r) => setTimeout(r, 0)); // let signals through
      },
    });
    const final = last as StepRecord | null;
    await ctx.checkpoint(result.steps, final?.epoch ?? ctx.startFrom?.epoch ?? 0);
    if (result.stopped) log(`interrupted at step ${result.steps}: checkpoint written`);
    Object.assign(manifest.summary, {
      steps: result.steps,
      finalLoss: final?.loss ?? manifest.summary.finalLoss ?? null,
      minLoss: Number.isFinite(minLoss) ? minLoss : null,
      trainSeconds: +(Number(manifest.summary.trainSeconds ?? 0) +
        (performance.now() - trainStart) / 1000).toFixed(1),
    });
  } finally {
    metrics.close();
    timings.close();
  }
}

/** One line about the sampler, e.g. "ddim, 50 of 1000 steps, eta 0, x_T gaussian". */
function describeSampler(config: Experiment, schedule: Schedule): string {
  const s = config.sampler;
  const T = schedule.timesteps;
  const head = s.kind === "ddim"
    ? `ddim, ${samplingSteps(s, T)} of ${T} steps, eta ${s.eta}`
    : `ddpm, ${T} steps, variance ${s.variance}, step noise ${s.stepNoise ? "on" : "off"}`;
  return `${head}, x_T ${s.initialNoise}${s.clipX0 ? ", x0 clipped" : ""}` +
    (config.optimizer.ema ? ", EMA weights" : "");
}

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = Math.round(seconds % 60);
  if (h > 0) return `${h}h${String(m).padStart(2, "0")}m`;
  return m > 0 ? `${m}m${String(s).padStart(2, "0")}s` : `${s}s`;
}
