/**
 * Training data: the `dataset` and `transform` sections of an experiment.
 *
 * {@link loadDataset} turns a dataset config into uint8 RGB images already resized to
 * `transform.size` (rendered DiceBear faces or an image folder); {@link makeBatch} turns a set of
 * indices into the float batch the model trains on, normalised as torchvision's
 * `ToTensor()` + `Normalize(0.5, 0.5)` and optionally mirrored.
 * @module
 */
import { dirname, resolve } from "node:path";
import type { DatasetConfig, TransformConfig } from "../../schemas/experiment.ts";
import { type Labels, loadAvatars } from "./avatars.ts";
import { loadFolder, resizeImages } from "./folder.ts";

export type { LabelAttribute, Labels } from "./avatars.ts";

/** A loaded dataset: uint8 RGB images, NHWC, already resized to the transform size. */
export interface Dataset {
  /** Number of images. */
  count: number;
  /** Width and height in pixels after the transform's resize. */
  size: number;
  /** Colour channels (RGB). */
  channels: 3;
  /** `count x size x size x 3` bytes, NHWC. */
  pixels: Uint8Array;
  /** Per-image categorical labels, when the source has them (avatar attributes, folder classes). */
  labels?: Labels;
  /** A one-line description of where the images came from. */
  source: string;
}

/** Options of {@link loadDataset}. */
export interface LoadDatasetOptions {
  /** The `transform` section: the output size. */
  transform: TransformConfig;
  /** The experiment seed (avatars are rendered from it). */
  seed: number;
  /** The avatar cache directory; default `<project>/.cache/avatars/`. */
  cacheDir?: string;
  /** The experiment file, named in errors about the dataset. */
  experimentFile?: string;
  /**
   * Directory a relative folder path is resolved against; default the experiment file's
   * directory, or the working directory when there is no experiment file.
   */
  baseDir?: string;
  /** Called as images are rendered or decoded. */
  onProgress?: (done: number, total: number) => void;
}

/**
 * Loads the dataset `dataset` resized to `options.transform.size`: avatars are rendered (or read
 * from the cache) at `renderSize` then resized with sharp; folder images are resized directly.
 */
export async function loadDataset(
  dataset: DatasetConfig,
  options: LoadDatasetOptions,
): Promise<Dataset> {
  const size = options.transform.size;
  if (dataset.kind === "avatars") {
    const set = await loadAvatars(options.seed, {
      count: dataset.count,
      renderSize: dataset.renderSize,
      cacheDir: options.cacheDir,
      onProgress: options.onProgress,
    });
    const pixels = await resizeImages(set.pixels, { count: set.count, from: set.size, to: size });
    return {
      count: set.count,
      size,
      channels: 3,
      pixels,
      labels: set.labels,
      source: `avatars: ${set.count} DiceBear lorelei faces (CC0), seed ${options.seed}, ` +
        `rendered at ${set.size} px${set.fromCache ? " (cached)" : ""}, resized to ${size} px`,
    };
  }
  const baseDir = options.baseDir ??
    (options.experimentFile === undefined ? "." : dirname(options.experimentFile));
  const root = resolve(baseDir, dataset.path);
  const images = await loadFolder(root, {
    size,
    configFile: options.experimentFile,
    limit: dataset.limit,
    onProgress: options.onProgress,
  });
  return {
    count: images.count,
    size,
    channels: 3,
    pixels: images.pixels,
    labels: images.labels,
    source: `folder: ${images.count} images from ${images.root}, resized to ${size} px`,
  };
}

/** Options of {@link makeBatch}. */
export interface MakeBatchOptions {
  /** Mirror image `i` of the batch horizontally when `flips[i]` is true. */
  flips?: ArrayLike<boolean>;
  /** Write into this array (length `indices.length x size x size x 3`) instead of a new one. */
  out?: Float32Array;
}

/**
 * `NORMALISED[v]` is byte `v` as `ToTensor()` + `Normalize(0.5, 0.5)` make it in float32:
 * `(v / 255 - 0.5) / 0.5`, each operation rounded to float32 as torch computes it.
 */
const NORMALISED: Float32Array = Float32Array.from(
  { length: 256 },
  (_, v) => Math.fround(Math.fround(Math.fround(v / 255) - 0.5) / 0.5),
);

/**
 * The batch of images `indices` of `dataset` as NHWC float32 in [-1, 1]
 * (`(v / 255 - 0.5) / 0.5`, torchvision's `ToTensor()` + `Normalize(0.5, 0.5)`), image `i`
 * mirrored horizontally where `options.flips[i]` is true.
 */
export function makeBatch(
  dataset: Dataset,
  indices: ArrayLike<number>,
  options: MakeBatchOptions = {},
): Float32Array {
  const { size, pixels, count } = dataset;
  const row = size * 3;
  const imageLength = size * row;
  const n = indices.length;
  const out = options.out ?? new Float32Array(n * imageLength);
  if (out.length !== n * imageLength) {
    throw new RangeError(`makeBatch: out has length ${out.length}, expected ${n * imageLength}`);
  }
  const flips = options.flips;
  if (flips !== undefined && flips.length < n) {
    throw new RangeError(`makeBatch: ${flips.length} flips for ${n} indices`);
  }
  const lut = NORMALISED;
  for (let b = 0; b < n; b++) {
    const index = indices[b];
    if (!Number.isInteger(index) || index < 0 || index >= count) {
      throw new RangeError(`makeBatch: index ${index} out of range [0, ${count})`);
    }
    const src = index * imageLength;
    const dst = b * imageLength;
    if (flips?.[b]) {
      for (let y = 0; y < size; y++) {
        const rowStart = y * row;
        for (let x = 0; x < size; x++) {
          const s = src + rowStart + (size - 1 - x) * 3;
          const d = dst + rowStart + x * 3;
          out[d] = lut[pixels[s]];
          out[d + 1] = lut[pixels[s + 1]];
          out[d + 2] = lut[pixels[s + 2]];
        }
      }
    } else {
      for (let k = 0; k < imageLength; k++) out[dst + k] = lut[pixels[src + k]];
    }
  }
  return out;
}
