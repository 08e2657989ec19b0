/**
 * Image output: sample grids as torchvision's `make_grid` + `save_image` make them, and
 * byte-deterministic PNG encoding, decoding and atomic writing with sharp.
 * @module
 */
import sharp from "sharp";
import { writeFileAtomic } from "./files.ts";

/**
 * An 8-bit image, rows top to bottom, pixels interleaved, with 1 (grey), 2 (grey + alpha), 3
 * (RGB, the default) or 4 (RGBA) channels: what grids are made as, PNGs are encoded from and
 * decoded to.
 */
export interface RasterImage {
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** `height x width x channels` bytes. */
  data: Uint8Array;
  /** Channels per pixel; default 3. */
  channels?: 1 | 2 | 3 | 4;
}

/** Options of {@link makeGrid}. */
export interface GridOptions {
  /** Number of images. */
  count: number;
  /** Height of each image. */
  height: number;
  /** Width of each image. */
  width: number;
  /** Channels of each image: 3, or 1 (repeated to RGB as torchvision does). */
  channels: 1 | 3;
  /** Images per row (`nrow`); default 8. */
  columns?: number;
  /** Pixels around and between the images; default 2. */
  padding?: number;
  /** The padding colour in the normalised [0, 1] scale (`pad_value`); default 0 (black). */
  padValue?: number;
  /** The value range mapped to [0, 255] (`value_range`); default [-1, 1]. */
  valueRange?: readonly [number, number];
}

/**
 * Lays `count` NHWC float images out in a grid exactly as
 * `torchvision.utils.make_grid(x, nrow=columns, padding, normalize=True, value_range, pad_value)`
 * followed by `save_image`'s `mul(255).add_(0.5).clamp_(0, 255)` and truncation to uint8, with
 * torch's float32 rounding: values are clamped to `valueRange` and mapped to [0, 1] by
 * `(x - low) / (high - low)`; the grid has `min(columns, count)` columns and
 * `ceil(count / columns)` rows of `(size + padding)` pixel cells plus `padding`, filled with
 * `padValue` around and between the images. As in torchvision, a single image comes back
 * without padding. NaN maps to 0.
 */
export function makeGrid(images: Float32Array, options: GridOptions): RasterImage {
  const { count, height: h, width: w, channels } = options;
  const columns = options.columns ?? 8;
  const padding = options.padding ?? 2;
  const padValue = options.padValue ?? 0;
  const [low, high] = options.valueRange ?? [-1, 1];
  if (!(count >= 1) || !(h >= 1) || !(w >= 1) || !(columns >= 1) || !(padding >= 0)) {
    throw new RangeError("makeGrid: count, height, width and columns must be >= 1, padding >= 0");
  }
  if (channels !== 1 && channels !== 3) {
    throw new RangeError(`makeGrid: channels must be 1 or 3, got ${channels}`);
  }
  if (images.length < count * h * w * channels) {
    throw new RangeError(
      `makeGrid: ${images.length} values, expected ${count}x${h}x${w}x${channels}`,
    );
  }
  const f = Math.fround;
  const low32 = f(low);
  const high32 = f(high);
  const scale = f(Math.max(high - low, 1e-5));
  const toByte = (v: number): number => {
    const scaled = f(f(v * 255) + 0.5);
    if (!(scaled > 0)) return 0; // also NaN
    return scaled >= 255 ? 255 : Math.trunc(scaled);
  };
  const normalise = (x: number): number => {
    const clamped = x < low32 ? low32 : x > high32 ? high32 : x;
    return toByte(f(f(clamped - low32) / scale));
  };

  const single = count === 1;
  const xmaps = single ? 1 : Math.min(columns, count);
  const ymaps = single ? 1 : Math.ceil(count / xmaps);
  const pad = single ? 0 : padding;
  const cellH = h + pad;
  const cellW = w + pad;
  const width = xmaps * cellW + pad;
  const height = ymaps * cellH + pad;
  const data = new Uint8Array(width * height * 3).fill(toByte(f(padValue)));
  for (let k = 0; k < count; k++) {
    const top = Math.floor(k / xmaps) * cellH + pad;
    const left = (k % xmaps) * cellW + pad;
    const src = k * h * w * channels;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const s = src + (y * w + x) * channels;
        const d = ((top + y) * width + left + x) * 3;
        if (channels === 3) {
          data[d] = normalise(images[s]);
          data[d + 1] = normalise(images[s + 1]);
          data[d + 2] = normalise(images[s + 2]);
        } else {
          data[d] = data[d + 1] = data[d + 2] = normalise(images[s]);
        }
      }
    }
  }
  return { width, height, data };
}

/** The fixed PNG settings of {@link encodePng}: same pixels, same bytes. */
const PNG_OPTIONS = {
  compressionLevel: 6,
  adaptiveFiltering: false,
  progressive: false,
  palette: false,
  force: true,
} as const;

/**
 * Encodes an 8-bit image as PNG with fixed compression settings and no metadata, so the same
 * pixels always give the same bytes (with the same sharp/libvips build).
 */
export async function encodePng(image: RasterImage): Promise<Uint8Array> {
  const channels = image.channels ?? 3;
  const { width, height, data } = image;
  if (data.length !== width * height * channels) {
    throw new RangeError(
      `encodePng: ${data.length} bytes, expected ${width}x${height}x${channels}`,
    );
  }
  const buffer = await sharp(data, { raw: { width, height, channels } })
    .png(PNG_OPTIONS)
    .toBuffer();
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

/** Decodes a PNG (or any format sharp reads) to 8-bit pixels with its stored channel count. */
export async function decodePng(bytes: Uint8Array): Promise<Required<RasterImage>> {
  const { data, info } = await sharp(bytes).raw({ depth: "uchar" }).toBuffer({
    resolveWithObject: true,
  });
  return {
    width: info.width,
    height: info.height,
    channels: info.channels as 1 | 2 | 3 | 4,
    data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
  };
}

/**
 * Encodes `image` with {@link encodePng} and writes it to `path` atomically: to a temporary file
 * in the same directory, then renamed over `path`.
 */
export async function writePng(path: string, image: RasterImage): Promise<void> {
  await writeFileAtomic(path, await encodePng(image));
}
