/**
 * Resizing many small square images at once with sharp (the avatars' renders, already decoded).
 * @module
 */
import sharp from "sharp";
import { forEachLimited } from "./decode.ts";
import { DEFAULT_KERNEL, type ResizeKernel } from "./transform.ts";

/** Options of {@link resizeImages}. */
export interface ResizeImagesOptions {
  /** Number of images in `pixels`. */
  count: number;
  /** Their current width and height. */
  from: number;
  /** The new width and height. */
  to: number;
  /** sharp kernel; default `linear` (antialiased bilinear, like PIL's BILINEAR). */
  kernel?: ResizeKernel;
  /** Strips resized at once; default 4. */
  concurrency?: number;
}

/** Half-width of each kernel's support, in (scaled) source pixels. */
const KERNEL_REACH: Record<ResizeKernel, number> = {
  nearest: 1,
  linear: 1,
  cubic: 2,
  mitchell: 2,
  lanczos2: 2,
  lanczos3: 3,
};

/** At most this many images and input pixels per sharp call in {@link resizeImages}. */
const STRIP_IMAGES = 256;
const STRIP_PIXELS = 1 << 22;

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

/**
 * Resizes `count` square RGB images (NHWC bytes) from `from` to `to` pixels with the dataset
 * `Resize((to, to))` (sharp `fit: "fill"` with `options.kernel`). Returns `pixels` itself when the size does not change.
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
  const reach = KERNEL_REACH[options.kernel ?? DEFAULT_KERNEL];
  const pad = Math.ceil((Math.ceil((2 * reach * Math.max(from, to)) / to) + 2) / unit) * unit;
  const padOut = (pad * to) / from;
  const blockIn = from + 2 * pad;
  const blockOut = to + 2 * padOut;
  const rowIn = from * 3;
  const rowOut = to * 3;
  const out = new Uint8Array(count * to * rowOut);
  const perStrip = Math.max(1, Math.min(STRIP_IMAGES, Math.floor(STRIP_PIXELS / (blockIn * from))));
  const strips = Math.ceil(count / perStrip);
  await forEachLimited(strips, async (strip) => {
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
      .resize(to, m * blockOut, {
        fit: "fill",
        kernel: options.kernel ?? DEFAULT_KERNEL,
        fastShrinkOnLoad: false,
      })
      .raw({ depth: "uchar" })
      .toBuffer();
    for (let k = 0; k < m; k++) {
      const start = (k * blockOut + padOut) * rowOut;
      out.set(data.subarray(start, start + to * rowOut), (first + k) * to * rowOut);
    }
  }, { concurrency: options.concurrency ?? 4 });
  return out;
}
