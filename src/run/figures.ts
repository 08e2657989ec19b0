/**
 * The pictures of a run folder: `forward.png` (the notebook's forward process), `samples.png`
 * with `trajectory.png` and `trajectory.gif` (the sampler's output and its reverse process), and
 * `recovery.png` (seed 002), captioned (./captions.ts) except the sample grid. Each function samples or noises with the run's named random
 * stream and writes its files atomically.
 * @module
 */
import { join } from "node:path";
import type { Experiment } from "../../schemas/experiment.ts";
import { type Dataset, makeBatch } from "../data/mod.ts";
import { qSample } from "../diffusion/forward.ts";
import { generate, visitedTimesteps } from "../diffusion/generate.ts";
import { recover, recoveryDistances, recoveryGridImages } from "../diffusion/recovery.ts";
import type { Denoiser } from "../diffusion/sampler.ts";
import type { Schedule } from "../diffusion/schedule.ts";
import { trajectoryPlan, TrajectoryRecorder } from "../diffusion/trajectory.ts";
import { trajectoryGif, trajectoryStrip } from "../io/animation.ts";
import { writeFileAtomic } from "../io/files.ts";
import { captionRows } from "../io/caption.ts";
import { makeGrid, writePng } from "../io/image.ts";
import type { LabelPlan } from "./conditions.ts";
import { plural } from "../config/summary.ts";
import { deriveRng } from "../rng.ts";
import {
  captionForward,
  captionRecovery,
  captionTrajectory,
  scaleForCaptions,
} from "./captions.ts";
import { tf } from "../tf.ts";

/** Lets pending signals (Ctrl-C) through between steps. */
export function yieldToEvents(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** A grid PNG of `count` square RGB images of side `size`. */
function writeGrid(
  path: string,
  images: Float32Array,
  options: { count: number; size: number; columns: number },
): Promise<void> {
  const { count, size, columns } = options;
  return writePng(
    path,
    makeGrid(images, { count, height: size, width: size, channels: 3, columns }),
  );
}

/**
 * forward.png: image 0 noised at 64 evenly spaced t, 8 per row (the `figures/forward` stream),
 * each t written under its image.
 */
export async function writeForwardFigure(
  dir: string,
  options: { dataset: Dataset; schedule: Schedule; seed: number },
): Promise<void> {
  const { dataset, schedule } = options;
  const n = 64;
  const T = schedule.timesteps;
  const steps = Int32Array.from({ length: n }, (_, i) => Math.floor((i * (T - 1)) / (n - 1)));
  const shape: [number, number, number, number] = [n, dataset.size, dataset.size, 3];
  const x0 = makeBatch(dataset, new Int32Array(n));
  const noise = deriveRng(options.seed, "figures/forward").normal(x0.length);
  const out = tf.tidy(() =>
    qSample(tf.tensor4d(x0, shape), tf.tensor4d(noise, shape), { schedule, steps })
  );
  const images = (await out.data()) as Float32Array;
  out.dispose();
  const size = dataset.size;
  const grid = makeGrid(images, { count: n, height: size, width: size, channels: 3, columns: 8 });
  const t = Array.from(steps, (k) => k + 1); // index k noises to x_{k+1}
  // Small images are scaled up so that `t=...` fits under each one.
  const labels = t.map((v) => `t=${v}`);
  const scaled = scaleForCaptions(grid, { size, columns: 8, rows: n / 8, labels });
  await writePng(
    join(dir, "forward.png"),
    await captionForward(scaled.grid, { cells: scaled.cells, t }),
  );
}

/** What {@linkcode sampleImages} needs besides the network and the schedule. */
export interface SampleImagesOptions {
  /** The resolved experiment (its `sampler`, `seed` and `model.prediction`). */
  config: Experiment;
  /** Image side. */
  size: number;
  /** Where progress lines go. */
  log: (line: string) => void;
  /** Stops after the current batch when aborted. */
  signal?: AbortSignal;
  /** Called after every step of every batch with the steps done and to do, over all batches. */
  onProgress?: (done: number, total: number) => void;
  /** Number of images (default `sampler.count`). */
  count?: number;
  /**
   * The denoiser of images `from` to `to` (exclusive), for one batch: a conditional model's
   * labels of those images (default: `denoise` for every batch).
   */
  batchDenoiser?: (range: { from: number; to: number }) => Denoiser;
  /** Record the trajectory (when `sampler.trajectory` asks for it; default true). */
  trajectory?: boolean;
}

/** The sampled images [count, size, size, C] and the recorded reverse process of the first batch. */
export interface SampledImages {
  /** All samples, batch after batch. */
  images: Float32Array;
  /** The recorded states, when `sampler.trajectory` asks for them. */
  trajectory: TrajectoryRecorder | null;
}

/**
 * Samples `sampler.count` images in batches from the `sample/noise` stream, printing progress
 * four times a batch; records the trajectory of the first batch. Null when aborted.
 */
export async function sampleImages(
  denoise: Denoiser,
  schedule: Schedule,
  options: SampleImagesOptions,
): Promise<SampledImages | null> {
  const { sampler, seed, model } = options.config;
  const rng = deriveRng(seed, "sample/noise");
  const { size } = options;
  const c = model.channels;
  const T = schedule.timesteps;
  const count = options.count ?? sampler.count;
  const trajectory = sampler.trajectory && options.trajectory !== false
    ? new TrajectoryRecorder(trajectoryPlan(visitedTimesteps(sampler, T), sampler.trajectory), {
      count: sampler.trajectory.count,
    })
    : null;
  const out = new Float32Array(count * size * size * c);
  const batches = Math.ceil(count / sampler.batchSize);
  for (let start = 0; start < count; start += sampler.batchSize) {
    const n = Math.min(sampler.batchSize, count - start);
    const started = performance.now();
    const record = start === 0 && trajectory ? trajectory.record : undefined;
    const batchDenoise = options.batchDenoiser?.({ from: start, to: start + n }) ?? denoise;
    const x = await generate(batchDenoise, schedule, {
      shape: [n, size, size, c],
      sampler,
      prediction: model.prediction,
      rng,
      onStart: record,
      onStep: async (t, state, { step, steps }) => {
        if (record) await record(t, state);
        const batch = start / sampler.batchSize;
        options.onProgress?.(batch * steps + step, batches * steps);
        // Four lines a batch, unless a progress display shows every step.
        if (!options.onProgress && step % Math.max(1, Math.floor(steps / 4)) === 0) {
          options.log(
            `  sampling images ${start + 1}-${start + n}: step ${step}/${steps} (t=${t})`,
          );
        }
        await yieldToEvents();
      },
    });
    out.set((await x.data()) as Float32Array, start * size * size * c);
    x.dispose();
    if (options.signal?.aborted) return null;
    const seconds = (performance.now() - started) / 1000;
    options.log(`  sampled ${start + n}/${count} (${seconds.toFixed(1)} s)`);
  }
  return { images: out, trajectory };
}

/**
 * samples.png, and with `sampler.trajectory` trajectory.png and trajectory.gif
 * (`trajectoryOnly`: only those two, for a conditional run whose samples.png has captions).
 */
export async function writeSampleFigures(
  dir: string,
  sampled: SampledImages,
  options: { config: Experiment; size: number; trajectoryOnly?: boolean },
): Promise<void> {
  const { size } = options;
  const { count, gridColumns, trajectory } = options.config.sampler;
  if (!options.trajectoryOnly) {
    await writeGrid(join(dir, "samples.png"), sampled.images, {
      count,
      size,
      columns: gridColumns,
    });
  }
  if (!sampled.trajectory || !trajectory) return;
  const layout = { count: trajectory.count, height: size, width: size, channels: 3 as const };
  const t = sampled.trajectory.stripTimesteps;
  const strip = trajectoryStrip(sampled.trajectory.strip(), layout);
  const labels = t.map((v) => `t=${v}`);
  const scaled = scaleForCaptions(strip, {
    size,
    columns: t.length,
    rows: trajectory.count,
    labels,
  });
  await writePng(
    join(dir, "trajectory.png"),
    await captionTrajectory(scaled.grid, { cells: scaled.cells, t }),
  );
  if (trajectory.gifFrames > 0) {
    const gif = await trajectoryGif(sampled.trajectory.gif(), {
      ...layout,
      delayMs: trajectory.gifDelayMs,
    });
    await writeFileAtomic(join(dir, "trajectory.gif"), gif);
  }
}

/**
 * A conditional run's grid: `samples.png` (or `samples-w<w>.png` for guidance weight w) with a
 * caption strip saying what each row asked for (the grid scaled up to at least 64 px cells),
 * and `samples-labels.json`, every image's requested labels in grid order.
 */
export async function writeConditionalFigure(
  dir: string,
  sampled: SampledImages,
  options: { config: Experiment; size: number; plan: LabelPlan; file: string },
): Promise<void> {
  const { size, plan } = options;
  const columns = options.config.sampler.gridColumns;
  const padding = 2;
  const grid = makeGrid(sampled.images, {
    count: plan.count,
    height: size,
    width: size,
    channels: 3,
    columns,
  });
  const captioned = await captionRows(grid, {
    rows: plan.rows,
    cell: size + padding,
    padding,
    scale: Math.max(1, Math.floor(64 / size)),
  });
  await writePng(join(dir, options.file), captioned);
  const legend = { rows: plan.rows, columns, images: plan.legend };
  await writeFileAtomic(join(dir, "samples-labels.json"), JSON.stringify(legend, null, 1) + "\n");
}

/**
 * recovery.png (seed 002), when the experiment has a `recovery` section: the first training
 * images noised to each t, then denoised with β and β̃ (the `recovery/noise` stream).
 */
export async function writeRecoveryFigure(
  dir: string,
  denoise: Denoiser,
  options: {
    config: Experiment;
    dataset: Dataset;
    schedule: Schedule;
    log: (line: string) => void;
  },
): Promise<void> {
  const { config, dataset } = options;
  if (!config.recovery) return;
  const { count, t, stepNoise } = config.recovery;
  const n = Math.min(count, dataset.count);
  const size = dataset.size;
  options.log(
    `recovery: ${plural(n, "image")} noised to t = ${t.join(", ")}, denoised with beta and beta~`,
  );
  const indices = Int32Array.from({ length: n }, (_, i) => i);
  const x0 = tf.tensor4d(makeBatch(dataset, indices), [n, size, size, 3]);
  const rows = await recover(denoise, options.schedule, {
    x0,
    t,
    rng: deriveRng(config.seed, "recovery/noise"),
    stepNoise,
    prediction: config.model.prediction,
    clipX0: config.sampler.clipX0,
    onStep: yieldToEvents,
  });
  x0.dispose();
  const grid = makeGrid(recoveryGridImages(rows, { count: n }), {
    count: rows.length * n * 4,
    height: size,
    width: size,
    channels: 3,
    columns: 4,
  });
  const rowT = rows.flatMap((row) => Array.from({ length: n }, () => row.t));
  const labels = ["x_0", "x_t", "σ²=β", "σ²=β̃"];
  const scaled = scaleForCaptions(grid, { size, columns: 4, rows: rowT.length, labels });
  await writePng(
    join(dir, "recovery.png"),
    await captionRecovery(scaled.grid, { cells: scaled.cells, rowT }),
  );
  // recovery.json: the distances behind the figure. For scale, each original is paired with
  // another training image (stream `recovery/reference`, drawn from those after the originals).
  const others = dataset.count - n;
  const rng = deriveRng(config.seed, "recovery/reference");
  const random = others > 0
    ? makeBatch(dataset, Int32Array.from({ length: n }, () => n + rng.int(others)))
    : undefined;
  const distances = recoveryDistances(rows, { count: n, random });
  await writeFileAtomic(
    join(dir, "recovery.json"),
    JSON.stringify({ distance: RECOVERY_DISTANCE, count: n, t: distances }, null, 1) + "\n",
  );
}

/** What recovery.json's distances are. */
const RECOVERY_DISTANCE = "RMS pixel difference on a 0-1 scale (images clamped to [-1, 1] as " +
  "for a PNG); mean and sample std over the images; toRandom and originalToRandom pair each " +
  "original with another training image (stream recovery/reference)";
