/**
 * The `transform` section, seed 004's torchvision preprocessing in its order:
 * `CenterCrop` -> `Resize((size, size))` -> `RandomHorizontalFlip(p)` -> `ToTensor()` +
 * `Normalize(mean, std)` -> multiply by `scale` (the input scaling of seed 004).
 *
 * The first two are deterministic and applied once, when the images are decoded into the uint8
 * cache ({@link cropBox} gives the crop); the last three run on every batch ({@link makeBatch}).
 * @module
 */
import type { TransformConfig } from "../../schemas/experiment.ts";
import type { RgbImages } from "./images.ts";

/** The sharp kernel of `transform.kernel` when unset: antialiased bilinear, as PIL's BILINEAR. */
export const DEFAULT_KERNEL = "linear";

/** A resize kernel of sharp. */
export type ResizeKernel = NonNullable<TransformConfig["kernel"]>;

/** Per-channel normalisation: `((v / 255) - mean[c]) / std[c] * scale`. */
export interface Normalisation {
  /** Subtracted from `v / 255`, per channel. */
  mean: [number, number, number];
  /** Divides the result, per channel. */
  std: [number, number, number];
  /** Multiplies the normalised value (1: none). */
  scale: number;
}

/** The deterministic part of a transform: what the decoded cache is keyed by. */
export interface DecodeTransform {
  /** Side of the central square kept, in source pixels; undefined: the whole image. */
  centerCrop?: number;
  /** Output width and height. */
  size: number;
  /** sharp resize kernel. */
  kernel: ResizeKernel;
}

/** The deterministic part of `transform` (defaults applied). */
export function decodeTransform(transform: TransformConfig): DecodeTransform {
  return {
    ...(transform.centerCrop === undefined ? {} : { centerCrop: transform.centerCrop }),
    size: transform.size,
    kernel: transform.kernel ?? DEFAULT_KERNEL,
  };
}

/** One line describing a `transform` section in pipeline order (for `--dry-run`). */
export function describeTransform(transform: TransformConfig): string {
  const n = normalisation(transform);
  const p = flipProbability(transform);
  const same = (v: number[]) => v.every((x) => x === v[0]) ? String(v[0]) : `[${v.join(", ")}]`;
  return [
    ...(transform.centerCrop === undefined ? [] : [`center crop ${transform.centerCrop}`]),
    `resize to ${transform.size}x${transform.size} (${transform.kernel ?? DEFAULT_KERNEL})`,
    p === 0 ? "no flip" : `random horizontal flip (p ${p})`,
    transform.normalize === undefined
      ? "normalise to [-1, 1]"
      : `normalise with mean ${same(n.mean)}, std ${same(n.std)}`,
    ...(n.scale === 1 ? [] : [`scale by ${n.scale}`]),
  ].join(", ");
}

/** The probability of a horizontal flip: `true` is torchvision's default 0.5, `false` 0. */
export function flipProbability(transform: Pick<TransformConfig, "horizontalFlip">): number {
  const flip = transform.horizontalFlip;
  return flip === true ? 0.5 : flip === false ? 0 : flip;
}

/** The normalisation of `transform`: [-1, 1] (mean = std = 0.5) unless it names mean/std. */
export function normalisation(transform: Partial<TransformConfig>): Normalisation {
  const three = (v: number | number[]): [number, number, number] =>
    typeof v === "number" ? [v, v, v] : [v[0], v[1], v[2]];
  const n = transform.normalize;
  return {
    mean: three(n?.mean ?? 0.5),
    std: three(n?.std ?? 0.5),
    scale: transform.scale ?? 1,
  };
}

function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * The `crop x crop` box of torchvision's `CenterCrop` in an `image.width x image.height` image:
 * `top = int(round((height - crop) / 2))` with Python's round-half-to-even, `left` likewise.
 * Undefined when the image is smaller than the crop (torchvision would pad; here it is an error).
 */
export function cropBox(
  image: { width: number; height: number },
  crop: number,
): { left: number; top: number; width: number; height: number } | undefined {
  const { width, height } = image;
  if (width < crop || height < crop) return undefined;
  return {
    left: roundHalfEven((width - crop) / 2),
    top: roundHalfEven((height - crop) / 2),
    width: crop,
    height: crop,
  };
}

/**
 * Crops the central `crop x crop` square of each of `count` square RGB images (NHWC bytes) of
 * side `from`, with {@link cropBox}'s offsets.
 */
export function centerCropImages(
  pixels: Uint8Array,
  options: { count: number; from: number; crop: number },
): Uint8Array {
  const { count, from, crop } = options;
  const box = cropBox({ width: from, height: from }, crop);
  if (!box) throw new RangeError(`centerCrop ${crop} is larger than the ${from}x${from} images`);
  if (crop === from) return pixels;
  const out = new Uint8Array(count * crop * crop * 3);
  for (let i = 0; i < count; i++) {
    for (let y = 0; y < crop; y++) {
      const src = ((i * from + box.top + y) * from + box.left) * 3;
      out.set(pixels.subarray(src, src + crop * 3), (i * crop + y) * crop * 3);
    }
  }
  return out;
}

/**
 * `lut[c * 256 + v]` is byte `v` of channel `c` as `ToTensor()` + `Normalize(mean, std)` make it in
 * float32 (`(v / 255 - mean) / std`, each operation rounded to float32 as torch computes it),
 * times `scale`.
 */
export function normalisationTable(n: Normalisation): Float32Array {
  const lut = new Float32Array(3 * 256);
  for (let c = 0; c < 3; c++) {
    const mean = Math.fround(n.mean[c]);
    const std = Math.fround(n.std[c]);
    for (let v = 0; v < 256; v++) {
      const x = Math.fround(Math.fround(Math.fround(v / 255) - mean) / std);
      lut[c * 256 + v] = n.scale === 1 ? x : Math.fround(x * Math.fround(n.scale));
    }
  }
  return lut;
}

const DEFAULT_TABLE = normalisationTable({ mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], scale: 1 });

/** What {@link makeBatch} reads: uint8 RGB images, NHWC, and the normalisation table. */
export interface BatchImages extends RgbImages {
  /** {@link normalisationTable} of the transform; default [-1, 1]. */
  table?: Float32Array;
}

/** Options of {@link makeBatch}. */
export interface MakeBatchOptions {
  /** Mirror image `i` of the batch horizontally when `flips[i]` is true. */
  flips?: ArrayLike<boolean>;
  /** Write into this array (length `indices.length x size x size x 3`) instead of a new one. */
  out?: Float32Array;
}

/**
 * The batch of images `indices` as NHWC float32, normalised with `images.table` (default
 * `(v / 255 - 0.5) / 0.5`, torchvision's `ToTensor()` + `Normalize(0.5, 0.5)`, in [-1, 1]), image
 * `i` mirrored horizontally where `options.flips[i]` is true.
 */
export function makeBatch(
  images: BatchImages,
  indices: ArrayLike<number>,
  options: MakeBatchOptions = {},
): Float32Array {
  const { size, pixels, count } = images;
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
  const lut = images.table ?? DEFAULT_TABLE;
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
          out[d + 1] = lut[256 + pixels[s + 1]];
          out[d + 2] = lut[512 + pixels[s + 2]];
        }
      }
    } else {
      for (let k = 0; k < imageLength; k += 3) {
        out[dst + k] = lut[pixels[src + k]];
        out[dst + k + 1] = lut[256 + pixels[src + k + 1]];
        out[dst + k + 2] = lut[512 + pixels[src + k + 2]];
      }
    }
  }
  return out;
}
