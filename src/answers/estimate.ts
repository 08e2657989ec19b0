/**
 * The dry run's time of each answer point, from a few measurements on this machine: training and
 * sampling steps of each distinct network (as `run --dry-run` measures them, on tfjs), and the
 * feature network's time per image at each evaluation size. The rest is counted from the config:
 * training steps, sampling steps of samples.png, of the evaluations (after each epoch, on tfjs;
 * at the end, on the run's engine), of the recovery figure and of the guidance grids.
 *
 * Two numbers are not measured here, and say so in the listing: ONNX Runtime's sampling step,
 * taken as {@link ONNX_FACTOR} of tfjs's (bench/RESULTS.md: 80 ms against 286 ms for the course
 * U-Net at 32x32, batch 32; 28 ms against about 110 ms for the 210,851-parameter network at
 * 16x16 measured for these answers), and the attribute judge's training, {@link JUDGE_SECONDS}.
 * @module
 */
import type { Experiment } from "../../schemas/experiment.ts";
import type { LoadedExperiment } from "../config/mod.ts";
import { samplingSteps } from "../diffusion/generate.ts";
import { makeSchedule } from "../diffusion/schedule.ts";
import { plannedSteps } from "../train/plan.ts";

/** ONNX Runtime's sampling step as a fraction of the tfjs wasm one (see the module doc). */
export const ONNX_FACTOR = 0.28;

/** The attribute judge's training (2,000 steps on 16x16 images, once per dataset), seconds. */
export const JUDGE_SECONDS = 120;

/** A point's process beyond its steps: Deno and wasm start, the dataset from its cache, export. */
export const POINT_OVERHEAD_SECONDS = 15;

/** What the estimate of a point rests on, measured once per network or resize. */
export interface Rates {
  /** Seconds per training step of this point's network and batch. */
  secondsPerStep: number;
  /** Seconds per sampling step of one image (tfjs, this network). */
  secondsPerImageStep: number;
  /** Seconds of the feature network per image at this point's `eval.resize`. */
  featureSecondsPerImage: number;
}

/** The parts of a point's estimated time, seconds. */
export interface PointEstimate {
  /** Training (0 when the point reuses a training). */
  train: number;
  /** samples.png (and the guidance grids of a conditional model), the recovery figure. */
  sample: number;
  /** The evaluations (after each epoch and at the end) and the guidance table's measures. */
  evaluate: number;
  /** The process's fixed cost. */
  overhead: number;
  /** All of it. */
  total: number;
}

/** The images a conditional run samples per guidance weight, from its label plan. */
function conditionalCount(config: Experiment): number {
  const labels = config.sampler.labels;
  if (labels?.kind !== "grid") return config.sampler.count;
  const dataset = config.dataset as { attributes?: Record<string, Record<string, unknown>> };
  const attribute = dataset.attributes?.[labels.attribute];
  const values = Array.isArray(attribute?.values)
    ? attribute.values.length
    : attribute?.groups
    ? Object.keys(attribute.groups).length + (attribute.probability !== undefined ? 1 : 0)
    : 4;
  return values * config.sampler.gridColumns;
}

/**
 * A point's estimated time from `rates` (pure): `trains` false for a point that reuses a
 * training; `firstOnDataset` when no earlier point evaluated against this dataset and size (the
 * reference and floor features, and the judge, are then computed and cached).
 */
export function estimatePoint(
  config: Experiment,
  options: { rates: Rates; datasetSize: number; trains: boolean; firstOnDataset: boolean },
): PointEstimate {
  const { rates, trains, firstOnDataset } = options;
  const schedule = makeSchedule(config.schedule);
  const steps = samplingSteps(config.sampler, schedule.timesteps);
  const engine = config.sampler.engine === "onnxruntime" ? ONNX_FACTOR : 1;
  const perImageStep = rates.secondsPerImageStep;
  const train = trains
    ? plannedSteps(options.datasetSize, config.train).total * rates.secondsPerStep
    : 0;
  const conditional = config.model.conditioning !== undefined;
  const guidance = config.sampler.guidance ?? [0];
  // guidance runs the network twice a step for w > 0
  const passes = conditional ? guidance.reduce((s, w) => s + (w === 0 ? 1 : 2), 0) : 1;
  const count = conditional ? conditionalCount(config) : config.sampler.count;
  let sample = count * passes * steps * perImageStep * engine;
  if (config.recovery) {
    const n = config.recovery.count;
    const reverse = config.recovery.t.reduce((s, t) => s + t, 0);
    sample += 2 * n * reverse * perImageStep * engine;
  }
  let evaluate = 0;
  const features = rates.featureSecondsPerImage;
  const settings = config.eval;
  if (settings) {
    const n = settings.samples;
    const final = n * steps * perImageStep * engine + n * features;
    const reference = firstOnDataset ? n * (settings.floor ? 2 : 1) * features : 0;
    const epochs = Math.ceil(
      plannedSteps(options.datasetSize, config.train).total /
        Math.max(1, plannedSteps(options.datasetSize, config.train).perEpoch),
    );
    const during = trains && settings.every !== undefined
      ? Math.floor((epochs - 1) / settings.every) * (n * steps * perImageStep + n * features)
      : 0;
    evaluate += final + reference + during +
      (settings.metrics.includes("judge") && firstOnDataset ? JUDGE_SECONDS : 0);
  }
  if (conditional && config.sampler.measure) {
    evaluate += guidance.length * 2 * count * features + (firstOnDataset ? JUDGE_SECONDS : 0);
  }
  const overhead = POINT_OVERHEAD_SECONDS;
  return { train, sample, evaluate, overhead, total: train + sample + evaluate + overhead };
}

/** What makes two points' step times the same: the network, the image size, batch and backend. */
export function costKey(config: Experiment): string {
  const { conditioning: _c, ...model } = config.model;
  return JSON.stringify({
    model,
    size: config.transform.size,
    batch: config.train.batchSize,
    microBatch: config.train.microBatch,
    workers: config.train.workers,
    backend: config.backend,
    sampleBatch: Math.min(config.sampler.batchSize, config.sampler.count),
  });
}

/**
 * Measures the rates of `loaded`'s network on this machine (loads TensorFlow.js): a few training
 * steps and a sampling step, as `run --dry-run` does, and the feature network on a few images at
 * `eval.resize` (cached per resize in `featureCache`).
 */
export async function measureRates(
  loaded: LoadedExperiment,
  options: { featureCache: Map<number, number>; stepCache: Map<string, Rates> },
): Promise<Rates> {
  const { config } = loaded;
  const key = costKey(config);
  let known = options.stepCache.get(key);
  if (!known) {
    const { estimateRun } = await import("../run/estimate.ts");
    const e = await estimateRun(loaded);
    const batch = Math.min(config.sampler.batchSize, config.sampler.count);
    known = {
      secondsPerStep: e.secondsPerStep,
      secondsPerImageStep: e.secondsPerSampleStep / batch,
      featureSecondsPerImage: 0,
    };
    options.stepCache.set(key, known);
  }
  const resize = config.eval?.resize ?? config.sampler.measure?.resize ?? 299;
  let features = options.featureCache.get(resize);
  if (features === undefined) {
    features = await featureSeconds(resize);
    options.featureCache.set(resize, features);
  }
  return { ...known, featureSecondsPerImage: features };
}

/** Seconds per image of the feature network at `resize` (8 images timed after a warm-up of 2). */
async function featureSeconds(resize: number): Promise<number> {
  const { loadFeatureNetwork } = await import("../eval/features.ts");
  const network = await loadFeatureNetwork({ resize });
  try {
    const size = 16;
    const pixels = (n: number) => new Uint8Array(n * size * size * 3).fill(128);
    await network.extract(pixels(2), { count: 2, size });
    const started = performance.now();
    await network.extract(pixels(8), { count: 8, size, batchSize: 8 });
    return (performance.now() - started) / 1000 / 8;
  } finally {
    network.dispose();
  }
}
