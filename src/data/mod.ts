/**
 * Training data: the `dataset` and `transform` sections of an experiment.
 *
 * {@link loadDataset} turns a dataset section into uint8 RGB images, NHWC, already center-cropped
 * and resized by the transform, with their labels: DiceBear avatars (rendered, cached), or images
 * from a folder, a zip archive or a Cartoon Set folder (decoded once into the decoded cache,
 * `.cache/datasets/`). {@link makeBatch} turns indices into the float batch the model trains on
 * (normalised, optionally mirrored) and {@link batchLabels} gives the same images' labels.
 * {@link loadLabelledImages} is the one call for consumers that need images and labels only
 * (the attribute judge).
 * @module
 */
import { createHash } from "node:crypto";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { DatasetConfig, TransformConfig } from "../../schemas/experiment.ts";
import { avatarPlan, loadAvatars } from "./avatars.ts";
import { decodedCacheKey, readDecodedCache, writeDecodedCache } from "./cache.ts";
import { openCartoonSet } from "./cartoonset.ts";
import { badFilesError, decodeImages, type SkippedFile } from "./decode.ts";
import { listImages, openFolder } from "./folder.ts";
import { type Attribute, type LabelSet, selectLabels, valueCounts } from "./labels.ts";
import { resizeImages } from "./resize.ts";
import type { ImageSource } from "./source.ts";
import { RunFailure } from "../errors.ts";
import {
  centerCropImages,
  type DecodeTransform,
  decodeTransform,
  flipProbability,
  normalisation,
  normalisationTable,
} from "./transform.ts";
import { openZip } from "./zip.ts";

export type { Attribute, LabelSet } from "./labels.ts";
export { batchLabels, valueCounts } from "./labels.ts";
export type { SkippedFile } from "./decode.ts";
export { makeBatch, type MakeBatchOptions } from "./transform.ts";

/** A loaded dataset: uint8 RGB images, NHWC, center-cropped and resized by the transform. */
export interface Dataset {
  /** Number of images. */
  count: number;
  /** Width and height in pixels after the transform's resize. */
  size: number;
  /** Colour channels (RGB). */
  channels: 3;
  /** `count x size x size x 3` bytes, NHWC. */
  pixels: Uint8Array;
  /** Per-image labels, when the source has them (avatar attributes, folder classes, CSVs). */
  labels?: LabelSet;
  /** The transform's normalisation as a lookup table (see `normalisationTable`). */
  table: Float32Array;
  /** Probability of a horizontal flip per image per epoch. */
  flipProbability: number;
  /** A one-line description of where the images came from. */
  source: string;
  /** What the run manifest records about the data. */
  record: DatasetRecord;
}

/** The manifest's record of a dataset: where it came from, what it holds, what was left out. */
export interface DatasetRecord {
  /** `dataset.kind`. */
  kind: DatasetConfig["kind"];
  /** The folder or archive read (absent for avatars). */
  location?: string;
  /** Number of images trained on. */
  count: number;
  /**
   * sha256 of the source: the archive file (zip), the `sha256sum`-style listing of the files read
   * (folder, cartoonset), or the rendered pixels and labels (avatars).
   */
  contentHash: string;
  /** Whether the images came from the decoded (or avatar) cache. */
  fromCache: boolean;
  /** The deterministic transform applied before caching. */
  transform: DecodeTransform;
  /** Each label attribute with its number of values and how often each value occurs. */
  labels: (Attribute & { counts: Record<string, number> })[];
  /** Files left out (`onBadImage: "skip"`), each with its reason. */
  skipped: SkippedFile[];
}

/** Options of {@link loadDataset}. */
export interface LoadDatasetOptions {
  /** The `transform` section. */
  transform: TransformConfig;
  /** The experiment seed (avatars are rendered from it). */
  seed: number;
  /** The avatar cache directory; default `<project>/.cache/avatars/`. */
  cacheDir?: string;
  /** The decoded-image cache directory; default `<project>/.cache/datasets/`. */
  decodedCacheDir?: string;
  /** The experiment file, named in errors about the dataset. */
  experimentFile?: string;
  /**
   * Directory a relative dataset path is resolved against; default the experiment file's
   * directory, or the working directory when there is no experiment file.
   */
  baseDir?: string;
  /** Called as images are rendered or decoded (not on a cache hit). */
  onProgress?: (done: number, total: number) => void;
  /** Images decoded at once; default `min(32, 4 x CPU cores)`. */
  concurrency?: number;
}

function projectCacheDir(name: string): string {
  const here = new URL(".", import.meta.url);
  if (here.protocol === "file:") return join(fileURLToPath(here), "..", "..", ".cache", name);
  return resolve(".cache", name);
}

function sourcePath(dataset: { path: string }, options: LoadDatasetOptions): string {
  const baseDir = options.baseDir ??
    (options.experimentFile === undefined ? "." : dirname(options.experimentFile));
  return resolve(baseDir, dataset.path);
}

type FileDataset = Exclude<DatasetConfig, { kind: "avatars" }>;

async function openSource(
  dataset: FileDataset,
  options: LoadDatasetOptions,
): Promise<ImageSource> {
  const path = sourcePath(dataset, options);
  const at = { configFile: options.experimentFile, limit: dataset.limit };
  switch (dataset.kind) {
    case "folder":
      return await openFolder(path, at);
    case "zip":
      return await openZip(path, { ...at, root: dataset.root });
    case "cartoonset":
      return await openCartoonSet(path, at);
  }
}

/** The decoding part of a transform, for the dataset line (`resized to 16 px`). */
function describeDecode(t: DecodeTransform): string {
  return (t.centerCrop === undefined ? "" : `center-cropped to ${t.centerCrop} px, `) +
    `resized to ${t.size} px` + (t.kernel === "linear" ? "" : ` (${t.kernel})`);
}

function record(
  dataset: DatasetConfig,
  fields: Omit<DatasetRecord, "kind" | "labels"> & { labels?: LabelSet },
): DatasetRecord {
  const { labels, ...rest } = fields;
  const counts = labels ? valueCounts(labels) : {};
  return {
    kind: dataset.kind,
    ...rest,
    labels: (labels?.attributes ?? []).map((a) => ({ ...a, counts: counts[a.name] })),
  };
}

async function loadAvatarDataset(
  dataset: Extract<DatasetConfig, { kind: "avatars" }>,
  options: LoadDatasetOptions,
  transform: DecodeTransform,
): Promise<Omit<Dataset, "table" | "flipProbability">> {
  const set = await loadAvatars(options.seed, {
    count: dataset.count,
    renderSize: dataset.renderSize,
    cacheDir: options.cacheDir,
    onProgress: options.onProgress,
    attributes: dataset.attributes,
    configFile: options.experimentFile,
  });
  const hash = createHash("sha256").update(set.pixels);
  for (const column of set.labels.labels) hash.update(new Uint8Array(column.buffer));
  const contentHash = hash.digest("hex");
  let pixels = set.pixels;
  let from = set.size;
  if (transform.centerCrop !== undefined) {
    pixels = centerCropImages(pixels, { count: set.count, from, crop: transform.centerCrop });
    from = transform.centerCrop;
  }
  pixels = await resizeImages(pixels, {
    count: set.count,
    from,
    to: transform.size,
    kernel: transform.kernel,
  });
  return {
    count: set.count,
    size: transform.size,
    channels: 3,
    pixels,
    labels: set.labels,
    source: `avatars: ${set.count} DiceBear lorelei faces (CC0), seed ${options.seed}, ` +
      `rendered at ${set.size} px${set.fromCache ? " (cached)" : ""}, ${describeDecode(transform)}`,
    record: record(dataset, {
      count: set.count,
      contentHash,
      fromCache: set.fromCache,
      transform,
      labels: set.labels,
      skipped: [],
    }),
  };
}

async function loadFileDataset(
  dataset: FileDataset,
  options: LoadDatasetOptions,
  transform: DecodeTransform,
): Promise<Omit<Dataset, "table" | "flipProbability">> {
  const source = await openSource(dataset, options);
  const where = { file: options.experimentFile, path: "dataset" };
  // Files listed that are gone when read: the dataset vanished (or changed) while it was read.
  const gone: string[] = [];
  const entries = source.entries.map((e) => ({
    name: e.name,
    read: async () => {
      try {
        return await e.read();
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) gone.push(e.name);
        throw err;
      }
    },
  }));
  const onBadImage = dataset.onBadImage ?? "fail";
  const background = dataset.kind === "cartoonset" ? dataset.background ?? "#ffffff" : "#ffffff";
  try {
    if (source.skipped.length > 0 && onBadImage === "fail") {
      throw badFilesError(source.skipped, where);
    }
    const contentHash = await source.contentHash().catch(async (err) => {
      if (err instanceof Deno.errors.NotFound) {
        throw await vanished(source, { total: entries.length });
      }
      throw err;
    });
    const key = decodedCacheKey(contentHash, {
      kind: dataset.kind,
      transform,
      selection: {
        root: dataset.kind === "zip" ? dataset.root ?? "" : "",
        limit: dataset.limit ?? null,
        background,
        onBadImage,
      },
    });
    const cacheDir = options.decodedCacheDir ?? projectCacheDir("datasets");
    let entry = await readDecodedCache(cacheDir, key);
    const fromCache = entry !== undefined;
    if (!entry) {
      const decoded = await decodeImages(entries, {
        transform,
        background,
        onBadImage,
        skipped: source.skipped,
        onProgress: options.onProgress,
        concurrency: options.concurrency,
        where,
      }).catch(async (err) => {
        throw gone.length > 0 ? await vanished(source, { gone, total: entries.length }) : err;
      });
      // With onBadImage "skip" the missing files were skipped: still no dataset to train on.
      if (gone.length > 0) throw await vanished(source, { gone, total: entries.length });
      const labels = source.labels ? selectLabels(source.labels, decoded.kept) : undefined;
      entry = {
        count: decoded.kept.length,
        size: transform.size,
        pixels: decoded.pixels,
        ...(labels ? { labels } : {}),
        skipped: decoded.skipped,
        contentHash,
      };
      // The same content elsewhere hits this entry: skipped files are kept relative to the source.
      const portable = decoded.skipped.map((s) =>
        isAbsolute(s.file) ? { ...s, file: relative(source.location, s.file) } : s
      );
      await writeDecodedCache(cacheDir, { ...entry, skipped: portable, key });
    } else if (dataset.kind !== "zip") {
      entry.skipped = entry.skipped.map((s) =>
        isAbsolute(s.file) ? s : { ...s, file: join(source.location, s.file) }
      );
    }
    const skipped = entry.skipped.length > 0 ? `, ${entry.skipped.length} bad files skipped` : "";
    return {
      count: entry.count,
      size: transform.size,
      channels: 3,
      pixels: entry.pixels,
      ...(entry.labels ? { labels: entry.labels } : {}),
      source: `${dataset.kind}: ${entry.count} images from ${source.location}` +
        (dataset.kind === "zip" && dataset.root ? ` (root ${dataset.root})` : "") +
        `${fromCache ? " (decoded cache)" : ""}, ${describeDecode(transform)}${skipped}`,
      record: record(dataset, {
        location: source.location,
        count: entry.count,
        contentHash,
        fromCache,
        transform,
        labels: entry.labels,
        skipped: entry.skipped,
      }),
    };
  } finally {
    await source.close();
  }
}

/**
 * The {@linkcode RunFailure} of a file dataset that vanished while it was read: its folder (or
 * archive) is gone, or `gone` files that were listed could not be found when read.
 */
async function vanished(
  source: ImageSource,
  options: { gone?: string[]; total: number },
): Promise<RunFailure> {
  const location = source.location;
  const exists = await Deno.stat(location).then(() => true, () => false);
  const gone = options.gone ?? [];
  const what = exists
    ? `${gone.length} of the ${options.total} files of the dataset ${location} disappeared ` +
      `while it was being read (the first: ${gone[0] ?? "?"})`
    : `the dataset ${location} vanished while it was being read` +
      (gone.length > 0 ? ` (${options.total - gone.length} of ${options.total} files read)` : "");
  return new RunFailure(what, {
    kept: "nothing: the decoded cache was not written and no run folder was created",
    todo: [
      `check that ${location} is there and complete (a network or removable disk that was ` +
      "unmounted? a sync or cleanup that moved it?), then run the same command again",
    ],
  });
}

/**
 * Loads the dataset `dataset` with the deterministic part of `options.transform` applied
 * (center crop, resize): avatars are rendered (or read from their cache) at `renderSize`, then
 * cropped and resized; file sources are decoded (or read from the decoded cache). Throws a
 * {@link UserError} for a missing or empty source and for bad files unless `onBadImage` is `skip`.
 */
export async function loadDataset(
  dataset: DatasetConfig,
  options: LoadDatasetOptions,
): Promise<Dataset> {
  const transform = decodeTransform(options.transform);
  const loaded = dataset.kind === "avatars"
    ? await loadAvatarDataset(dataset, options, transform)
    : await loadFileDataset(dataset, options, transform);
  return {
    ...loaded,
    table: normalisationTable(normalisation(options.transform)),
    flipProbability: flipProbability(options.transform),
  };
}

/**
 * The number of images `dataset` holds, without decoding any (a `--dry-run`): the avatar count
 * (after checking the avatar attributes), or the images listed (Cartoon Set: those with a valid CSV), `limit` applied.
 */
export async function countImages(
  dataset: DatasetConfig,
  options: Pick<LoadDatasetOptions, "experimentFile" | "baseDir"> = {},
): Promise<number> {
  if (dataset.kind === "avatars") {
    // Checks the attributes (names, variants, colours, groups) without rendering.
    avatarPlan(dataset.attributes, {
      seed: 0,
      count: dataset.count,
      configFile: options.experimentFile,
    });
    return dataset.count;
  }
  if (dataset.kind === "folder") {
    const n = (await listImages(sourcePath(dataset, options as LoadDatasetOptions), {
      configFile: options.experimentFile,
    })).length;
    return dataset.limit === undefined ? n : Math.min(n, dataset.limit);
  }
  const source = await openSource(dataset, options as LoadDatasetOptions);
  await source.close();
  return source.entries.length;
}

/** A dataset section's images and labels, for consumers that do not train (the judge). */
export interface LabelledImages {
  /** `count x height x width x channels` bytes, NHWC, RGB. */
  images: Uint8Array;
  /** Number of images. */
  count: number;
  /** Image height. */
  height: number;
  /** Image width. */
  width: number;
  /** Colour channels (3). */
  channels: 3;
  /** The label attributes (name, number of values, value names where known). */
  attributes: Attribute[];
  /** `labels[a][i]`: the value of `attributes[a]` for image `i`. */
  labels: Int32Array[];
  /** The source's content hash (see {@link DatasetRecord.contentHash}). */
  contentHash: string;
}

/**
 * Loads a dataset section into uint8 NHWC images (center-cropped and resized as `transform`
 * says; default: resized to 32 px) with their labels per attribute. Unlabelled sources give no
 * attributes. Uses the same caches as training.
 */
export async function loadLabelledImages(
  dataset: DatasetConfig,
  options: Omit<LoadDatasetOptions, "transform"> & { transform?: Partial<TransformConfig> },
): Promise<LabelledImages> {
  const transform: TransformConfig = { size: 32, horizontalFlip: false, ...options.transform };
  const data = await loadDataset(dataset, { ...options, transform });
  return {
    images: data.pixels,
    count: data.count,
    height: data.size,
    width: data.size,
    channels: 3,
    attributes: data.labels?.attributes ?? [],
    labels: data.labels?.labels ?? [],
    contentHash: data.record.contentHash,
  };
}
