/**
 * Decoding encoded images (png, jpg, webp, gif) into `size x size` RGB bytes with sharp, after
 * the transform's deterministic steps: composite transparency on a background colour, `CenterCrop`,
 * `Resize((size, size))`.
 *
 * Decoding follows torchvision's `ImageFolder` + `CenterCrop` + `Resize((H, W))` where it can:
 * - the first frame of an animated gif/webp is used; EXIF orientation is ignored (as PIL does);
 * - transparency is flattened onto the background (PIL's `convert("RGB")` would drop alpha
 *   instead, exposing whatever colour the transparent pixels hold);
 * - greyscale, 16-bit and CMYK images are converted to 8-bit sRGB;
 * - the crop offsets are torchvision's ({@link cropBox});
 * - resizing ignores the aspect ratio (sharp `fit: "fill"`, like `Resize((H, W))`); the default
 *   `linear` kernel is a triangle filter widened by the scale factor when shrinking, the same
 *   antialiased bilinear filter as PIL's `BILINEAR`, which torchvision uses on PIL images.
 *   Results are close to but not bit-identical with PIL's (different fixed-point rounding).
 *
 * A file that cannot be decoded is a bad image: with `onBadImage: "fail"` every bad image is
 * collected and one {@link UserError} lists them; with `"skip"` they are returned with reasons.
 * @module
 */
import sharp, { type Metadata, type OutputInfo } from "sharp";
import { UserError } from "../errors.ts";
import { cropBox, type DecodeTransform } from "./transform.ts";

/** One encoded image to decode: how to name it in messages and how to read its bytes. */
export interface ImageEntry {
  /** The file as the user knows it: a path, or `archive.zip:inner/path`. */
  name: string;
  /** Reads the encoded bytes. */
  read(): Promise<Uint8Array>;
}

/** A file left out of the dataset and why. */
export interface SkippedFile {
  /** The file (path, or `archive.zip:inner/path`). */
  file: string;
  /** What is wrong with it. */
  reason: string;
}

/** Options of {@link decodeImages}. */
export interface DecodeImagesOptions {
  /** Crop, size and kernel. */
  transform: DecodeTransform;
  /** Colour transparent pixels are composited on; default white. */
  background?: string;
  /** `fail` (default): throw one UserError naming every bad image; `skip`: leave them out. */
  onBadImage?: "fail" | "skip";
  /** Problems already found (e.g. CSVs): reported with the bad images. */
  skipped?: SkippedFile[];
  /** Called after each image, decoded or not. */
  onProgress?: (done: number, total: number) => void;
  /** Images decoded at once; default `min(32, 4 x CPU cores)`. */
  concurrency?: number;
  /** The experiment file and JSON path named in the error. */
  where?: { file?: string; path?: string };
}

/** Decoded images. */
export interface DecodedImages {
  /** `kept.length x size x size x 3` bytes, NHWC, in entry order. */
  pixels: Uint8Array;
  /** Indices of the entries decoded, ascending. */
  kept: number[];
  /** Every bad file with its reason (empty unless `onBadImage` is `skip`). */
  skipped: SkippedFile[];
}

/** At most this many bad files are listed in an error message. */
const LISTED_PROBLEMS = 20;

/** `min(32, 4 x CPU cores)`: sharp runs on libuv threads, so a few calls in flight keep them busy. */
export function defaultConcurrency(): number {
  return Math.min(32, 4 * Math.max(1, navigator.hardwareConcurrency ?? 1));
}

/** Runs `task(0..count-1)` with at most `options.concurrency` in flight. */
export async function forEachLimited(
  count: number,
  task: (index: number) => Promise<void>,
  options: { concurrency: number },
): Promise<void> {
  const { concurrency } = options;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, count)) }, worker));
}

function message(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split("\n")[0];
}

/** Decodes one encoded image to `size x size x 3` bytes, or throws a one-line reason. */
export async function decodeImage(
  bytes: Uint8Array,
  options: { transform: DecodeTransform; background?: string },
): Promise<Uint8Array> {
  if (bytes.length === 0) throw new Error("empty file (0 bytes)");
  const { size, kernel, centerCrop } = options.transform;
  let image = sharp(bytes, { pages: 1, failOn: "truncated" });
  if (centerCrop !== undefined) {
    let meta: Metadata;
    try {
      meta = await image.metadata();
    } catch (error) {
      throw new Error(`not a readable image: ${message(error)}`);
    }
    const width = meta.width ?? 0;
    const height = meta.pageHeight ?? meta.height ?? 0;
    const box = cropBox({ width, height }, centerCrop);
    if (!box) {
      throw new Error(`${width}x${height} is smaller than centerCrop ${centerCrop}`);
    }
    image = image.extract(box);
  }
  let data: Uint8Array;
  let info: OutputInfo;
  try {
    ({ data, info } = await image
      .flatten({ background: options.background ?? "#ffffff" })
      .resize(size, size, { fit: "fill", kernel, fastShrinkOnLoad: false })
      .toColourspace("srgb")
      .removeAlpha()
      .raw({ depth: "uchar" })
      .toBuffer({ resolveWithObject: true }));
  } catch (error) {
    throw new Error(`not a readable image: ${message(error)}`);
  }
  if (info.width !== size || info.height !== size || info.channels !== 3) {
    throw new Error(`decoded to ${info.width}x${info.height}x${info.channels}`);
  }
  return data;
}

/** The UserError that lists bad files (at most {@link LISTED_PROBLEMS} of them). */
export function badFilesError(
  problems: SkippedFile[],
  where: { file?: string; path?: string } = {},
): UserError {
  const listed = problems.slice(0, LISTED_PROBLEMS).map((p) => `  ${p.file}: ${p.reason}`);
  const more = problems.length > LISTED_PROBLEMS
    ? [`  ... and ${problems.length - LISTED_PROBLEMS} more`]
    : [];
  return new UserError(
    `${problems.length} bad file${problems.length === 1 ? "" : "s"} (onBadImage "fail"; ` +
      `"skip" trains on the rest and lists them in the manifest):\n` +
      [...listed, ...more].join("\n"),
    where,
  );
}

/**
 * Decodes `entries` (see the module documentation). Every entry is attempted, so that an error
 * lists all bad files at once.
 */
export async function decodeImages(
  entries: readonly ImageEntry[],
  options: DecodeImagesOptions,
): Promise<DecodedImages> {
  const { size } = options.transform;
  const imageBytes = size * size * 3;
  const all = new Uint8Array(entries.length * imageBytes);
  const ok = new Uint8Array(entries.length);
  const reasons: (string | undefined)[] = new Array(entries.length);
  let done = 0;
  const concurrency = options.concurrency ?? defaultConcurrency();
  await forEachLimited(entries.length, async (i) => {
    try {
      const raw = await decodeImage(await entries[i].read(), options);
      all.set(raw, i * imageBytes);
      ok[i] = 1;
    } catch (error) {
      reasons[i] = message(error);
    }
    done++;
    options.onProgress?.(done, entries.length);
  }, { concurrency });
  const skipped = [...(options.skipped ?? [])];
  const kept: number[] = [];
  entries.forEach((entry, i) => {
    if (ok[i]) kept.push(i);
    else skipped.push({ file: entry.name, reason: reasons[i] ?? "unknown error" });
  });
  if (skipped.length > 0 && (options.onBadImage ?? "fail") === "fail") {
    throw badFilesError(skipped, options.where);
  }
  if (kept.length === 0) {
    throw new UserError(`no image of the dataset could be decoded (${skipped.length} bad files)`, {
      ...options.where,
      expected: "at least one valid image",
    });
  }
  if (kept.length === entries.length) return { pixels: all, kept, skipped };
  const pixels = new Uint8Array(kept.length * imageBytes);
  kept.forEach((k, j) =>
    pixels.set(all.subarray(k * imageBytes, (k + 1) * imageBytes), j * imageBytes)
  );
  return { pixels, kept, skipped };
}
