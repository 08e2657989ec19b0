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
import { sampleDdpm } from "../diffusion/sampler.ts";
import { makeSchedule, type Schedule, terminalSignal } from "../diffusion/schedule.ts";
import { writeFileAtomic } from "../io/files.ts";
import { makeGrid, writePng } from "../io/image.ts";
import { countParameters, createModel, type DenoiseModel } from "../model/mod.ts";
import { deriveRng } from "../rng.ts";
import { tf } from "../tf.ts";
import { saveCheckpoint } from "../train/checkpoint.ts";
import { Adam, type BatchSource, plannedSteps, trainModel } from "../train/mod.ts";
import { prepareRunFolder, runFolder } from "./folder.ts";
import {
  gitState,
  hashArtifacts,
  type Manifest,
  softwareVersions,
  writeManifest,
} from "./manifest.ts";

/** Options of {@link runExperiment}. */
export interface RunOptions {
  /** Root of run folders (default `outputs`). */
  outRoot: string;
  /** Replace a complete run of the same config. */
  force?: boolean;
  /** Print what would run and exit. */
  dryRun?: boolean;
  /** Where progress lines go (default console.log). */
  log?: (line: string) => void;
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
  return [
    formatConfigSummary(config),
    "",
    `dataset size      ${count} images`,
    `model parameters  ${countParameters(config.model).toLocaleString("en-US")}`,
    `alpha_bar_T       ${alphaBarT.toPrecision(4)}   sqrt(alpha_bar_T) ${
      sqrtAlphaBarT.toPrecision(4)
    }` +
    (sqrtAlphaBarT > 0.1 ? "   (x_T still holds visible signal of x_0)" : ""),
    `training steps    ${steps.total} (${steps.perEpoch} per epoch)`,
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

async function sampleImages(
  model: DenoiseModel,
  schedule: Schedule,
  options: {
    config: Experiment;
    size: number;
    log: (line: string) => void;
    shouldStop: () => boolean;
  },
): Promise<Float32Array | null> {
  const { sampler, seed } = options.config;
  const rng = deriveRng(seed, "sample/noise");
  const size = options.size;
  const c = options.config.model.channels;
  const out = new Float32Array(sampler.count * size * size * c);
  for (let start = 0; start < sampler.count; start += sampler.batchSize) {
    const n = Math.min(sampler.batchSize, sampler.count - start);
    const started = performance.now();
    let stopped = false;
    const x = await sampleDdpm((xt, t) => model.predict(xt, t), schedule, {
      shape: [n, size, size, c],
      flags: sampler,
      rng,
      onStep: async (i) => {
        if (options.shouldStop()) stopped = true;
        if (i % Math.max(1, Math.floor(schedule.timesteps / 4)) === 0) {
          options.log(`  sampling images ${start + 1}-${start + n}: t=${i}`);
        }
        await new Promise((r) => setTimeout(r, 0)); // let signals through
      },
    });
    out.set((await x.data()) as Float32Array, start * size * size * c);
    x.dispose();
    if (stopped) return null;
    options.log(
      `  sampled ${start + n}/${sampler.count} (${
        ((performance.now() - started) / 1000).toFixed(1)
      } s)`,
    );
  }
  return out;
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

  // Everything that can fail on bad input happens before the run folder exists.
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
  await prepareRunFolder(dir, { force: options.force ?? false });

  const { alphaBarT, sqrtAlphaBarT } = terminalSignal(schedule);
  const manifest: Manifest = {
    format: 1,
    name: config.name,
    seed: config.seed,
    configHash: hash,
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
  await writeFileAtomic(join(dir, "config.json"), JSON.stringify(config, null, 2) + "\n");
  await writeManifest(dir, manifest);

  let interrupted = false;
  const onSignal = () => {
    if (interrupted) Deno.exit(130);
    interrupted = true;
    log("interrupt: finishing the current step, writing a checkpoint (press again to abort)");
  };
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  signals.forEach((s) => Deno.addSignalListener(s, onSignal));

  const model = createModel(config.model, { rng: deriveRng(config.seed, "model/init") });
  const optimizer = new Adam(model.params, config.optimizer);
  try {
    const size = dataset.size;
    const grid = (images: Float32Array, count: number, columns: number) =>
      makeGrid(images, { count, height: size, width: size, channels: 3, columns });
    const forward = await forwardFigure(dataset, schedule, config.seed);
    await writePng(join(dir, "forward.png"), grid(forward, 64, 8));

    const steps = plannedSteps(dataset.count, config.train);
    log(
      `training ${steps.total} steps on ${backend.name}` +
        ` (${manifest.summary.parameters?.toLocaleString("en-US")} parameters)`,
    );
    const metrics = await Deno.open(join(dir, "metrics.jsonl"), {
      write: true,
      create: true,
      truncate: true,
    });
    const timings = await Deno.open(join(dir, "timings.jsonl"), {
      write: true,
      create: true,
      truncate: true,
    });
    const encoder = new TextEncoder();
    const trainStart = performance.now();
    let windowStart = trainStart;
    let windowLoss = 0;
    let windowSteps = 0;
    let lastLoss = NaN;
    let minLoss = Infinity;
    let lastEpoch = 0;
    const result = await trainModel(model, {
      seed: config.seed,
      schedule,
      loss: config.loss,
      train: config.train,
      optimizer,
      data: batchSource(dataset, config),
      shouldStop: () => interrupted,
      onStep: async ({ step, epoch, loss }) => {
        lastLoss = loss;
        lastEpoch = epoch;
        minLoss = Math.min(minLoss, loss);
        windowLoss += loss;
        windowSteps++;
        await metrics.write(encoder.encode(JSON.stringify({ step, epoch, loss }) + "\n"));
        if (step % config.train.logEvery === 0 || step === steps.total) {
          const now = performance.now();
          const perStep = (now - windowStart) / 1000 / windowSteps;
          await timings.write(encoder.encode(
            JSON.stringify({ step, seconds: +((now - trainStart) / 1000).toFixed(3) }) + "\n",
          ));
          const eta = perStep * (steps.total - step);
          log(
            `step ${step}/${steps.total} [epoch ${epoch}] loss ${
              (windowLoss / windowSteps).toFixed(4)
            }` +
              `  ${perStep.toFixed(2)} s/step  eta ${formatDuration(eta)}`,
          );
          windowStart = now;
          windowLoss = 0;
          windowSteps = 0;
        }
        await new Promise((r) => setTimeout(r, 0)); // let signals through
      },
    });
    metrics.close();
    timings.close();
    await saveCheckpoint(join(dir, "checkpoint"), {
      model,
      optimizer,
      state: { step: result.steps, epoch: lastEpoch },
    });
    Object.assign(manifest.summary, {
      steps: result.steps,
      finalLoss: Number.isNaN(lastLoss) ? null : lastLoss,
      minLoss: Number.isFinite(minLoss) ? minLoss : null,
      trainSeconds: +((performance.now() - trainStart) / 1000).toFixed(1),
    });

    let samples: Float32Array | null = null;
    if (!interrupted) {
      log(
        `sampling ${config.sampler.count} images (${schedule.timesteps} steps, ` +
          `variance ${config.sampler.variance}, x_T ${config.sampler.initialNoise}, ` +
          `step noise ${config.sampler.stepNoise ? "on" : "off"})`,
      );
      samples = await sampleImages(model, schedule, {
        config,
        size,
        log,
        shouldStop: () => interrupted,
      });
    }
    if (samples) {
      await writePng(
        join(dir, "samples.png"),
        grid(samples, config.sampler.count, config.sampler.gridColumns),
      );
    }
    manifest.status = interrupted ? "interrupted" : "complete";
  } catch (err) {
    manifest.status = "failed";
    manifest.error = err instanceof Error ? err.message : String(err);
    throw err;
  } finally {
    signals.forEach((s) => Deno.removeSignalListener(s, onSignal));
    model.dispose();
    optimizer.dispose();
    manifest.endedAt = new Date().toISOString();
    Object.assign(manifest, await hashArtifacts(dir));
    await writeManifest(dir, manifest);
  }
  log(`${manifest.status}: ${dir}`);
  return { dir, status: manifest.status, manifest };
}

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = Math.round(seconds % 60);
  return h > 0
    ? `${h}h${String(m).padStart(2, "0")}m`
    : m > 0
    ? `${m}m${String(s).padStart(2, "0")}s`
    : `${s}s`;
}
