/**
 * ImageFolder-style datasets: every png/jpg/jpeg/webp/gif under a directory (searched
 * recursively, extensions case-insensitive), in sorted path order, decoded and resized with sharp
 * to `size x size` RGB.
 *
 * Decoding follows torchvision's `ImageFolder` + `Resize((H, W))` where it can:
 * - the first frame of an animated gif/webp is used; EXIF orientation is ignored (as PIL does);
 * - transparency is flattened onto white (PIL's `convert("RGB")` would drop alpha instead,
 *   exposing whatever colour the transparent pixels hold);
 * - greyscale, 16-bit and CMYK images are converted to 8-bit sRGB;
 * - resizing ignores the aspect ratio (sharp `fit: "fill"`, like `Resize((H, W))`) with sharp's
 *   `linear` kernel: a triangle filter widened by the scale factor when shrinking, the same
 *   antialiased bilinear filter as PIL's `BILINEAR`, which torchvision uses on PIL images.
 *   Results are close to but not bit-identical with PIL's (different fixed-point rounding).
 *
 * If every image lies in a subdirectory, the first path component is the image's class (the
 * ImageFolder convention) and is returned as a `class` label attribute with sorted class names.
 * @module
 */
import sharp from "sharp";
import { join, resolve } from "node:path";
import { UserError } from "../errors.ts";
import type { Labels } from "./avatars.ts";

/** The image file extensions the folder loader reads (compared case-insensitively). */
export const IMAGE_EXTENSIONS: readonly string[] = [".png", ".jpg", ".jpeg", ".webp", ".gif"];

/** The sharp resize settings of every dataset resize: `Resize((H, W))`, antialiased bilinear. */
export const RESIZE_OPTIONS: { fit: "fill"; kernel: "linear"; fastShrinkOnLoad: false } = {
  fit: "fill",
  kernel: "linear",
  fastShrinkOnLoad: false,
};

/** Images loaded from a folder. */
export interface FolderImages {
  /** Number of images. */
  count: number;
  /** Width and height in pixels. */
  size: number;
  /** `count x size x size x 3` RGB bytes, NHWC. */
  pixels: Uint8Array;
  /** The image paths relative to the folder, `/`-separated, in load order. */
  files: string[];
  /** The ImageFolder class of each image, when every image lies in a subdirectory. */
  labels?: Labels;
  /** The absolute folder path. */
  root: string;
}

/** Options of {@link loadFolder}. */
export interface LoadFolderOptions {
  /** Output width and height in pixels. */
  size: number;
  /** Use only the first N images in sorted path order. */
  limit?: number;
  /** Called as images are decoded. */
  onProgress?: (done: number, total: number) => void;
  /** Images decoded at once; default `min(32, 4 x CPU cores)`. */
  concurrency?: number;
  /** The experiment file named in errors, when there is one. */
  configFile?: string;
  /** The JSON path named in errors; default `dataset.path`. */
  configPath?: string;
}

function defaultConcurrency(): number {
  return Math.min(32, 4 * Math.max(1, navigator.hardwareConcurrency ?? 1));
}

async function forEachLimited(
  count: number,
  concurrency: number,
  task: (index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, count)) }, worker));
}

function isImageName(name: string): boolean {
  const lower = name.toLowerCase();
  return IMAGE_EXTENSIONS.some((ext) => lower.endsWith(ext) && lower.length > ext.length);
}

function compareCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The image files under `root` (recursively, following symbolic links once), as `/`-separated
 * paths relative to `root`, sorted by code unit. Throws a {@link UserError} when `root` does not
 * exist or is not a directory.
 */
export async function listImages(
  root: string,
  options: { configFile?: string; configPath?: string } = {},
): Promise<string[]> {
  const where = { file: options.configFile, path: options.configPath ?? "dataset.path" };
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(root);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new UserError(`image folder ${root} does not exist`, {
        ...where,
        expected: "an existing directory of images",
      });
    }
    throw error;
  }
  if (!info.isDirectory) {
    throw new UserError(`${root} is not a directory`, {
      ...where,
      expected: "a directory of images",
    });
  }
  const found: string[] = [];
  const visited = new Set<string>([await Deno.realPath(root)]);
  const walk = async (dir: string, prefix: string): Promise<void> => {
    for await (const entry of Deno.readDir(dir)) {
      const path = join(dir, entry.name);
      const relative = prefix + entry.name;
      let isFile = entry.isFile;
      let isDirectory = entry.isDirectory;
      if (entry.isSymlink) {
        try {
          const target = await Deno.stat(path);
          isFile = target.isFile;
          isDirectory = target.isDirectory;
        } catch {
          continue; // a dangling link
        }
      }
      if (isDirectory) {
        const real = await Deno.realPath(path);
        if (visited.has(real)) continue;
        visited.add(real);
        await walk(path, relative + "/");
      } else if (isFile && isImageName(entry.name)) {
        found.push(relative);
      }
    }
  };
  await walk(root, "");
  return found.sort(compareCodeUnits);
}

/**
 * Loads the images under `path` (see the module documentation), resized to
 * `options.size x options.size` RGB. Throws a {@link UserError} when the folder does not exist,
 * holds no images, or an image cannot be decoded (naming the file).
 */
export async function loadFolder(path: string, options: LoadFolderOptions): Promise<FolderImages> {
  const { size } = options;
  const where = { file: options.configFile, path: options.configPath ?? "dataset.path" };
  const root = resolve(path);
  let files = await listImages(root, { configFile: where.file, configPath: where.path });
  if (files.length === 0) {
    throw new UserError(`image folder ${root} contains no images`, {
      ...where,
      expected: `image files with extension ${IMAGE_EXTENSIONS.join(", ")} (any case)`,
    });
  }
  if (options.limit !== undefined) files = files.slice(0, options.limit);
  const count = files.length;
  const imageBytes = size * size * 3;
  const pixels = new Uint8Array(count * imageBytes);
  let done = 0;
  await forEachLimited(count, options.concurrency ?? defaultConcurrency(), async (i) => {
    const file = join(root, files[i]);
    let raw: Uint8Array;
    try {
      const { data, info } = await sharp(file, { pages: 1 })
        .flatten({ background: "#ffffff" })
        .resize(size, size, RESIZE_OPTIONS)
        .toColourspace("srgb")
        .removeAlpha()
        .raw({ depth: "uchar" })
        .toBuffer({ resolveWithObject: true });
      if (info.width !== size || info.height !== size || info.channels !== 3) {
        throw new Error(`decoded to ${info.width}x${info.height}x${info.channels}`);
      }
      raw = data;
    } catch (error) {
      throw new UserError(
        `cannot decode image ${file}: ${error instanceof Error ? error.message : String(error)}`,
        { ...where, expected: "a valid png, jpg, webp or gif image" },
      );
    }
    pixels.set(raw, i * imageBytes);
    done++;
    options.onProgress?.(done, count);
  });
  return { count, size, pixels, files, labels: folderClasses(files), root };
}

function folderClasses(files: string[]): Labels | undefined {
  const classOf = files.map((file) => {
    const slash = file.indexOf("/");
    return slash < 0 ? undefined : file.slice(0, slash);
  });
  if (classOf.some((c) => c === undefined)) return undefined;
  const classes = [...new Set(classOf as string[])].sort(compareCodeUnits);
  if (classes.length > 256) return undefined;
  const index = new Map(classes.map((c, i) => [c, i]));
  return {
    attributes: [{ name: "class", values: classes }],
    data: Uint8Array.from(classOf, (c) => index.get(c as string) ?? 0),
  };
}

/** Options of {@link resizeImages}. */
export interface ResizeImagesOptions {
  /** Number of images in `pixels`. */
  count: number;
  /** Their current width and height. */
  from: number;
  /** The new width and height. */
  to: number;
  /** Strips resized at once; default 4. */
  concurrency?: number;
}

/** At most this many images and input pixels per sharp call in {@link resizeImages}. */
const STRIP_IMAGES = 256;
const STRIP_PIXELS = 1 << 22;

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

/**
 * Resizes `count` square RGB images (NHWC bytes) from `from` to `to` pixels with the dataset
 * resize ({@link RESIZE_OPTIONS}). Returns `pixels` itself when the size does not change.
 *
 * One sharp call costs about a millisecond whatever the image size, so the images are resized
 * up to 256 at a time, stacked into a vertical strip in which each image is padded above and below with
 * copies of its edge rows; the padding is a multiple of `from / gcd(from, to)` rows, so every image
 * starts on an output row and samples exactly as when resized alone, and at least the filter's
 * reach, so no image bleeds into the next. The result is identical to resizing each image on
 * its own for scale factors below 4; from 4 on, libvips box-shrinks before filtering and resizes
 * of single images extend their edges after that shrink, so their top rows differ by a few
 * levels.
 */
export async function resizeImages(
  pixels: Uint8Array,
  options: ResizeImagesOptions,
): Promise<Uint8Array> {
  const { count, from, to } = options;
  if (pixels.length !== count * from * from * 3) {
    throw new RangeError(
      `resizeImages: expected ${count}x${from}x${from}x3 bytes, got ${pixels.length}`,
    );
  }
  if (from === to) return pixels;
  const unit = from / gcd(from, to);
  const pad = Math.ceil((Math.ceil((2 * from) / to) + 2) / unit) * unit;
  const padOut = (pad * to) / from;
  const blockIn = from + 2 * pad;
  const blockOut = to + 2 * padOut;
  const rowIn = from * 3;
  const rowOut = to * 3;
  const out = new Uint8Array(count * to * rowOut);
  const perStrip = Math.max(1, Math.min(STRIP_IMAGES, Math.floor(STRIP_PIXELS / (blockIn * from))));
  const strips = Math.ceil(count / perStrip);
  await forEachLimited(strips, options.concurrency ?? 4, async (strip) => {
    const first = strip * perStrip;
    const m = Math.min(perStrip, count - first);
    const input = new Uint8Array(m * blockIn * rowIn);
    for (let k = 0; k < m; k++) {
      const src = (first + k) * from * rowIn;
      const dst = k * blockIn * rowIn;
      for (let y = 0; y < blockIn; y++) {
        const sy = Math.min(from - 1, Math.max(0, y - pad));
        input.set(pixels.subarray(src + sy * rowIn, src + (sy + 1) * rowIn), dst + y * rowIn);
      }
    }
    const data = await sharp(input, {
      raw: { width: from, height: m * blockIn, channels: 3 },
      limitInputPixels: false,
    })
      .resize(to, m * blockOut, RESIZE_OPTIONS)
      .raw({ depth: "uchar" })
      .toBuffer();
    for (let k = 0; k < m; k++) {
      const start = (k * blockOut + padOut) * rowOut;
      out.set(data.subarray(start, start + to * rowOut), (first + k) * to * rowOut);
    }
  });
  return out;
}
