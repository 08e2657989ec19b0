/**
 * Image sets for evaluation: uint8 RGB NHWC pixels exactly as they are saved to PNG, from a
 * sampler, an image folder, or cut back out of a run's `samples.png` grid.
 * @module
 */
import sharp from "sharp";
import { join, resolve } from "node:path";
import {
  DatasetSchema,
  type ModelConfig,
  type SamplerConfig,
  TransformSchema,
} from "../../schemas/experiment.ts";
import { listImages } from "../data/folder.ts";
import type { RgbImages } from "../data/images.ts";
import { loadDataset } from "../data/mod.ts";
import { generate } from "../diffusion/generate.ts";
import type { Denoiser } from "../diffusion/ddpm.ts";
import type { Schedule } from "../diffusion/schedule.ts";
import { UserError } from "../errors.ts";
import { decodePng, makeGrid } from "../io/image.ts";
import type { Rng } from "../rng.ts";

/** Images to evaluate, and where they came from. */
export interface ImageSet extends RgbImages {
  /** Where the images came from, in words. */
  source: string;
}

/**
 * Float images in [-1, 1] (NHWC) as uint8, with the rounding of `samples.png`
 * (torchvision's `make_grid(normalize=True, value_range=(-1, 1))` + `save_image`).
 */
export function toUint8Images(images: Float32Array, options: { count: number; size: number }) {
  const { count, size } = options;
  // one column without padding lays the images out contiguously, NHWC
  return makeGrid(images, { count, height: size, width: size, channels: 3, columns: 1, padding: 0 })
    .data;
}

/** Options of {@link sampleImageSet}. */
export interface SampleImageSetOptions {
  /** The sampler section. */
  sampler: SamplerConfig;
  /** What the network predicts. */
  prediction: ModelConfig["prediction"];
  /** Images to sample. */
  count: number;
  /** Image side. */
  size: number;
  /** Generator of x_T and of the step noise. */
  rng: Rng;
  /** Progress lines. */
  log?: (line: string) => void;
  /** Stops between batches when aborted (returns null). */
  signal?: AbortSignal;
}

/** Samples `options.count` images in batches of `sampler.batchSize` as uint8 pixels. */
export async function sampleImageSet(
  denoise: Denoiser,
  schedule: Schedule,
  options: SampleImageSetOptions,
): Promise<ImageSet | null> {
  const { sampler, count, size } = options;
  const imageLength = size * size * 3;
  const out = new Uint8Array(count * imageLength);
  for (let start = 0; start < count; start += sampler.batchSize) {
    const n = Math.min(sampler.batchSize, count - start);
    const x = await generate(denoise, schedule, {
      shape: [n, size, size, 3],
      sampler,
      prediction: options.prediction,
      rng: options.rng,
      onStep: () => new Promise((r) => setTimeout(r, 0)), // let signals through
    });
    const data = (await x.data()) as Float32Array;
    x.dispose();
    out.set(toUint8Images(data, { count: n, size }), start * imageLength);
    options.log?.(`  eval: sampled ${start + n}/${count}`);
    if (options.signal?.aborted) return null;
  }
  return { count, size, pixels: out, source: `${count} samples (${sampler.kind})` };
}

/**
 * The images of an image folder (recursively), all resized to the size of the first one (or
 * `size`) as the `folder` dataset loads them. Throws a {@link UserError} naming the folder when it
 * is missing or empty, and the file when an image cannot be decoded.
 */
export async function folderImageSet(
  path: string,
  options: { size?: number; what?: string } = {},
): Promise<ImageSet> {
  const where = options.what ?? "image folder";
  const root = resolve(path);
  const files = await listImages(root, { configPath: where });
  if (files.length === 0) {
    throw new UserError(`image folder ${root} contains no images`, {
      path: where,
      expected: "png, jpg, jpeg, webp or gif files",
    });
  }
  let size = options.size;
  if (size === undefined) {
    const first = join(root, files[0]);
    try {
      const meta = await sharp(first).metadata();
      size = Math.max(meta.width ?? 0, meta.height ?? 0);
    } catch (error) {
      throw new UserError(`cannot decode image ${first}: ${(error as Error).message}`, {
        path: where,
        expected: "a valid png, jpg, webp or gif image",
      });
    }
  }
  const dataset = await loadDataset(DatasetSchema.parse({ kind: "folder", path: root }), {
    transform: TransformSchema.parse({ size, horizontalFlip: false }),
    seed: 0,
  });
  return {
    count: dataset.count,
    size,
    pixels: dataset.pixels,
    source: `folder ${root}: ${dataset.count} images at ${size} px`,
  };
}

/**
 * Cuts the `count` images back out of a `samples.png` grid (padding 2, `columns` per row, no
 * padding for a single image): the exact bytes the run saved.
 */
export async function gridImageSet(
  png: Uint8Array,
  options: { count: number; size: number; columns: number; source: string },
): Promise<ImageSet> {
  const { count, size, columns } = options;
  const grid = await decodePng(png);
  const pad = count === 1 ? 0 : 2;
  const cols = count === 1 ? 1 : Math.min(columns, count);
  const rows = Math.ceil(count / cols);
  if (grid.width !== cols * (size + pad) + pad || grid.height !== rows * (size + pad) + pad) {
    throw new UserError(
      `${options.source}: a ${grid.width}x${grid.height} grid does not hold ${count} images of ` +
        `${size} px in ${cols} columns`,
      { expected: "the samples.png that the run wrote with its config.json" },
    );
  }
  const pixels = new Uint8Array(count * size * size * 3);
  for (let k = 0; k < count; k++) {
    const top = Math.floor(k / cols) * (size + pad) + pad;
    const left = (k % cols) * (size + pad) + pad;
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const s = ((top + y) * grid.width + left + x) * grid.channels;
        const d = ((k * size + y) * size + x) * 3;
        for (let c = 0; c < 3; c++) pixels[d + c] = grid.data[s + Math.min(c, grid.channels - 1)];
      }
    }
  }
  return { count, size, pixels, source: `${options.source}: ${count} samples at ${size} px` };
}

/** The images `indices` of `set`, as a new set. */
export function pickImages(set: ImageSet, indices: ArrayLike<number>, source?: string): ImageSet {
  const length = set.size * set.size * 3;
  const pixels = new Uint8Array(indices.length * length);
  for (let i = 0; i < indices.length; i++) {
    const k = indices[i];
    pixels.set(set.pixels.subarray(k * length, (k + 1) * length), i * length);
  }
  return { count: indices.length, size: set.size, pixels, source: source ?? set.source };
}
