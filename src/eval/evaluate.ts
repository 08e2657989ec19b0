/**
 * One evaluation: features of a generated set and of a reference set (cached per dataset content
 * hash and protocol), KID and FID between them, the real-vs-real floor, and the protocol record
 * that says how the numbers were made.
 * @module
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { UserError } from "../errors.ts";
import { sha256Hex, writeFileAtomic } from "../io/files.ts";
import { deriveRng } from "../rng.ts";
import type { FeatureNetwork, FeatureNetworkInfo } from "./features.ts";
import { type ImageSet, pickImages } from "./images.ts";
import { fid, kid, meanPairwiseDistance } from "./metrics.ts";

/**
 * The metrics an evaluation can compute on features: KID and FID between the samples and the
 * reference, and the diversity of the samples (beside the same for the reference images).
 */
export type FeatureMetric = "kid" | "fid" | "diversity";

/** Settings of the metrics (recorded in the protocol). */
export interface MetricSettings {
  /** Which metrics. */
  metrics: readonly FeatureMetric[];
  /** KID: number of subsets. */
  kidSubsets: number;
  /** KID: subset size (capped at the set sizes). */
  kidSubsetSize: number;
  /** Seed of the KID subsets and of the reference selection. */
  seed: number;
}

/** The numbers of one comparison, named with the network's suffix (`kid_iv3m5`, ...). */
export type MetricValues = Record<string, number>;

/** How a result was made: everything needed to compare it with another one, or to redo it. */
export interface Protocol {
  /** The feature network. */
  network: FeatureNetworkInfo;
  /** The generated (or first) set: where it came from and its size. */
  samples: { source: string; count: number } & Record<string, unknown>;
  /** The reference (or second) set. */
  reference: { source: string; count: number } & Record<string, unknown>;
  /** FID: the N of both sets (FID is only reported at equal N). */
  fid?: { n: number };
  /** KID settings. */
  kid?: { kernel: string; subsets: number; subsetSize: number; seed: number };
  /** Diversity: what is measured, and the key of the reference images' own. */
  diversity?: { measure: string; real: string };
  /** The tfjs backend the features were computed on. */
  backend: string;
}

/**
 * The metric names of a network: `kid_iv3m5`, `fid_iv3m5` and `diversity_iv3m5`, or `kid`, `fid`
 * and `diversity`.
 */
export function metricNames(info: Pick<FeatureNetworkInfo, "metricSuffix">): {
  kid: string;
  fid: string;
  diversity: string;
} {
  const suffix = info.metricSuffix;
  return { kid: `kid${suffix}`, fid: `fid${suffix}`, diversity: `diversity${suffix}` };
}

/**
 * KID (mean and `_std`) and FID between two feature sets. FID is computed at equal N: when the
 * sizes differ, on the first min(N_a, N_b) rows of each (callers pass sets in random order).
 */
export function compareFeatures(
  a: { features: Float32Array; count: number },
  b: { features: Float32Array; count: number },
  options: MetricSettings & { network: FeatureNetworkInfo },
): { values: MetricValues; fidN: number; kidSubsetSize: number } {
  const dims = options.network.dims;
  const names = metricNames(options.network);
  const values: MetricValues = {};
  const n = Math.min(a.count, b.count);
  let kidSubsetSize = 0;
  if (options.metrics.includes("kid")) {
    const k = kid(a.features, b.features, {
      dims,
      subsets: options.kidSubsets,
      subsetSize: options.kidSubsetSize,
      seed: options.seed,
    });
    values[names.kid] = k.mean;
    values[`${names.kid}_std`] = k.std;
    kidSubsetSize = k.subsetSize;
  }
  if (options.metrics.includes("fid")) {
    values[names.fid] = fid(a.features.subarray(0, n * dims), b.features.subarray(0, n * dims), {
      dims,
    });
  }
  return { values, fidN: n, kidSubsetSize };
}

/** sha256 of a dataset's pixels and size: the key of everything cached about its content. */
export function datasetContentHash(set: Pick<ImageSet, "pixels" | "size" | "count">): string {
  return createHash("sha256").update(`${set.count}x${set.size}x${set.size}x3\n`)
    .update(set.pixels).digest("hex");
}

/** The reference images drawn from a dataset and their features. */
export interface ReferenceFeatures {
  /** Features of the reference set (`count x dims`). */
  features: Float32Array;
  /** Size of the reference set. */
  count: number;
  /** Features of the floor set, disjoint from the reference set (null without a floor). */
  floor: Float32Array | null;
  /** Size of the floor set. */
  floorCount: number;
  /** Dataset content hash. */
  datasetHash: string;
  /** Whether the features came from the cache. */
  cached: boolean;
  /** The cache file. */
  cacheFile: string;
}

/** Options of {@link referenceFeatures}. */
export interface ReferenceOptions {
  /** The feature network. */
  network: FeatureNetwork;
  /** Size of the reference set (capped at the dataset size). */
  count: number;
  /** Also draw a disjoint floor set of the same size (capped at what is left). */
  floor: boolean;
  /** Seed of the draw (stream `eval/reference`). */
  seed: number;
  /** Cache folder (default `.cache/eval` under the project). */
  cacheDir?: string;
}

const DEFAULT_CACHE = new URL("../../.cache/eval", import.meta.url).pathname;

/**
 * Draws the reference set (and the floor set after it) from `dataset` with a seeded
 * permutation, and returns their features, read from the cache when this dataset content,
 * network, resize and draw were evaluated before. The dataset's pixels are decoded once, by the
 * caller; they are never read again here.
 */
export async function referenceFeatures(
  dataset: ImageSet,
  options: ReferenceOptions,
): Promise<ReferenceFeatures> {
  const { network } = options;
  const count = Math.min(options.count, dataset.count);
  const floorCount = options.floor ? Math.min(count, dataset.count - count) : 0;
  const datasetHash = datasetContentHash(dataset);
  const key = sha256Hex(JSON.stringify({
    datasetHash,
    network: network.info,
    seed: options.seed,
    count,
    floorCount,
  })).slice(0, 24);
  const dir = options.cacheDir ?? DEFAULT_CACHE;
  const cacheFile = join(dir, `reference-${key}.f32`);
  const dims = network.info.dims;
  const total = count + floorCount;
  const split = (all: Float32Array, cached: boolean): ReferenceFeatures => ({
    features: all.slice(0, count * dims),
    count,
    floor: floorCount >= 2 ? all.slice(count * dims, total * dims) : null,
    floorCount: floorCount >= 2 ? floorCount : 0,
    datasetHash,
    cached,
    cacheFile,
  });
  try {
    const bytes = await Deno.readFile(cacheFile);
    if (bytes.length === total * dims * 4) {
      return split(new Float32Array(bytes.buffer, bytes.byteOffset, total * dims), true);
    }
  } catch {
    // not cached yet
  }
  const order = deriveRng(options.seed, "eval/reference").permutation(dataset.count);
  const chosen = pickImages(dataset, order.subarray(0, total));
  const all = await network.extract(chosen.pixels, { count: total, size: dataset.size });
  await Deno.mkdir(dir, { recursive: true });
  await writeFileAtomic(cacheFile, new Uint8Array(all.buffer, all.byteOffset, all.byteLength));
  return split(all, false);
}

/** A full result: the numbers, the floor, and the protocol. */
export interface EvalResult {
  /** Metric values of samples vs reference. */
  metrics: MetricValues;
  /** The same metrics between two disjoint sets of real images (absent without a floor). */
  floor?: MetricValues & { n: number };
  /** How the numbers were made. */
  protocol: Protocol;
}

/** Options of {@link evaluateSamples}. */
export interface EvaluateSamplesOptions extends MetricSettings {
  /** The feature network. */
  network: FeatureNetwork;
  /** The dataset the reference set is drawn from (decoded once by the caller). */
  dataset: ImageSet;
  /** Whether to compute the real-vs-real floor. */
  floor: boolean;
  /** The tfjs backend (recorded). */
  backend: string;
  /** The reference set in words (default `dataset.source`); must not vary between reruns. */
  referenceDescription?: string;
  /** Extra protocol fields of the samples (sampler, steps, EMA, seed stream...). */
  samplesProtocol?: Record<string, unknown>;
  /** Reference-feature cache folder. */
  cacheDir?: string;
}

/**
 * Evaluates generated images against a reference set of as many images drawn from `dataset`
 * (and, with `floor`, two disjoint real sets against each other). Throws a {@link UserError}
 * when the samples and the dataset differ in size or there are fewer than 2 images.
 */
export async function evaluateSamples(
  samples: ImageSet,
  options: EvaluateSamplesOptions,
): Promise<EvalResult> {
  const { network } = options;
  if (samples.count < 2) {
    throw new UserError(`${samples.source}: ${samples.count} image(s)`, {
      expected: "at least 2 images to evaluate",
    });
  }
  const ref = await referenceFeatures(options.dataset, {
    network,
    count: samples.count,
    floor: options.floor,
    seed: options.seed,
    cacheDir: options.cacheDir,
  });
  const generated = await network.extract(samples.pixels, {
    count: samples.count,
    size: samples.size,
  });
  const compared = compareFeatures(
    { features: generated, count: samples.count },
    { features: ref.features, count: ref.count },
    { ...options, network: network.info },
  );
  const names = metricNames(network.info);
  const diversity = options.metrics.includes("diversity");
  if (diversity) {
    const dims = network.info.dims;
    compared.values[names.diversity] = meanPairwiseDistance(generated, { dims });
    compared.values[`${names.diversity}_real`] = meanPairwiseDistance(ref.features, { dims });
  }
  let floor: EvalResult["floor"];
  if (ref.floor) {
    const f = compareFeatures(
      { features: ref.floor, count: ref.floorCount },
      { features: ref.features, count: ref.count },
      { ...options, network: network.info },
    );
    floor = { ...f.values, n: f.fidN };
  }
  const protocol: Protocol = {
    network: network.info,
    samples: { ...options.samplesProtocol, source: samples.source, count: samples.count },
    reference: {
      source:
        `${
          options.referenceDescription ?? options.dataset.source
        }: ${ref.count} images drawn by a seeded permutation ` +
        `(stream eval/reference, seed ${options.seed}); floor: the next ${ref.floorCount}`,
      count: ref.count,
      split: "training set",
      datasetHash: ref.datasetHash,
      floorCount: ref.floorCount,
      // Whether the features came from the cache is left out: it would make eval.jsonl differ
      // between two identical runs.
    },
    backend: options.backend,
  };
  if (options.metrics.includes("fid")) protocol.fid = { n: compared.fidN };
  if (options.metrics.includes("kid")) {
    protocol.kid = {
      kernel: "(x·y/d + 1)^3, unbiased MMD²",
      subsets: options.kidSubsets,
      subsetSize: compared.kidSubsetSize,
      seed: options.seed,
    };
  }
  if (diversity) {
    protocol.diversity = {
      measure: "mean Euclidean distance between the features of two different images, over " +
        "all pairs",
      real: `${names.diversity}_real: the same for the ${ref.count} reference images`,
    };
  }
  return { metrics: compared.values, floor, protocol };
}
