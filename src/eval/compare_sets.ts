/**
 * KID and FID between two image sets, pytorch-fid's command (`deno task fid`).
 * @module
 */
import { deriveRng } from "../rng.ts";
import {
  compareFeatures,
  type EvalResult,
  type FeatureMetric,
  metricNames,
} from "./samples_vs_reference.ts";
import type { FeatureNetwork } from "./features.ts";
import { type ImageSet, pickImages } from "./images.ts";

/** Options of {@link compareImageSets}. */
export interface CompareOptions {
  /** The feature network. */
  network: FeatureNetwork;
  /** Metrics (default both). */
  metrics?: FeatureMetric[];
  /** KID subsets (default 100). */
  kidSubsets?: number;
  /** KID subset size (default 1000). */
  kidSubsetSize?: number;
  /** Seed of the KID subsets and of the FID subset (default 0). */
  seed?: number;
  /** The tfjs backend (recorded). */
  backend: string;
}

/**
 * KID and FID between two image sets (pytorch-fid's command). KID uses every image; FID is
 * computed at equal N: the larger set is cut to a seeded random subset of the smaller size.
 */
export async function compareImageSets(
  a: ImageSet,
  b: ImageSet,
  options: CompareOptions,
): Promise<EvalResult> {
  const { network } = options;
  const seed = options.seed ?? 0;
  const metrics = options.metrics ?? ["kid", "fid"];
  const n = Math.min(a.count, b.count);
  const ordered = (set: ImageSet, name: string): ImageSet =>
    set.count === n
      ? set
      : pickImages(set, deriveRng(seed, `fid/subset/${name}`).permutation(set.count));
  const fa = await network.extract(ordered(a, "a").pixels, { count: a.count, size: a.size });
  const fb = await network.extract(ordered(b, "b").pixels, { count: b.count, size: b.size });
  const settings = {
    metrics,
    kidSubsets: options.kidSubsets ?? 100,
    kidSubsetSize: options.kidSubsetSize ?? 1000,
    seed,
    network: network.info,
  };
  const compared = compareFeatures({ features: fa, count: a.count }, {
    features: fb,
    count: b.count,
  }, settings);
  return {
    metrics: compared.values,
    protocol: {
      network: network.info,
      samples: { source: a.source, count: a.count },
      reference: { source: b.source, count: b.count },
      ...(metrics.includes("fid") ? { fid: { n } } : {}),
      ...(metrics.includes("kid")
        ? {
          kid: {
            kernel: "(x·y/d + 1)^3, unbiased MMD²",
            subsets: settings.kidSubsets,
            subsetSize: compared.kidSubsetSize,
            seed,
          },
        }
        : {}),
      backend: options.backend,
    },
  };
}

/** The names a result's metrics go by, for messages: e.g. `kid_iv3m5, fid_iv3m5`. */
export function describeMetrics(network: FeatureNetwork): string {
  const names = metricNames(network.info);
  return `${names.kid}, ${names.fid}`;
}
