/**
 * Pictures of the reverse process: a strip PNG (one row per sample, one column per kept state)
 * and an animated GIF (one frame per kept state, the samples side by side), both laid out as
 * `makeGrid` draws sample grids and encoded with fixed settings (same pixels, same bytes).
 * @module
 */
import sharp from "sharp";
import { makeGrid, type RasterImage } from "./image.ts";

/** The layout of the states: `count` images of height x width x channels each. */
export interface StateLayout {
  /** Images in each state. */
  count: number;
  /** Height of each image. */
  height: number;
  /** Width of each image. */
  width: number;
  /** Channels of each image. */
  channels: 1 | 3;
  /** Pixels around and between images; default 2. */
  padding?: number;
}

/**
 * The strip: row r holds sample r at every state of `states` (each [count, H, W, C] values, in
 * reverse-process order), so a row reads from x_T on the left to the sample on the right.
 */
export function trajectoryStrip(states: readonly Float32Array[], layout: StateLayout): RasterImage {
  const { count, height, width, channels } = layout;
  const size = height * width * channels;
  const images = new Float32Array(count * states.length * size);
  let offset = 0;
  for (let r = 0; r < count; r++) {
    for (const state of states) {
      images.set(state.subarray(r * size, (r + 1) * size), offset);
      offset += size;
    }
  }
  return makeGrid(images, {
    count: count * states.length,
    height,
    width,
    channels,
    columns: states.length,
    padding: layout.padding,
  });
}

/** Options of {@link encodeGif}. */
export interface GifOptions {
  /** How long each frame shows, in ms. */
  delayMs: number;
  /** How long the last frame shows (default 10 x delayMs, so the sample rests on screen). */
  lastDelayMs?: number;
  /** Number of loops, 0 = forever (default). */
  loop?: number;
}

/**
 * Encodes same-sized RGB frames as an animated GIF with sharp: a fixed palette search, no
 * dithering and no frame merging, so the same frames always give the same bytes.
 */
export async function encodeGif(
  frames: readonly RasterImage[],
  options: GifOptions,
): Promise<Uint8Array> {
  if (frames.length === 0) throw new RangeError("encodeGif: no frames");
  const { width, height } = frames[0];
  const page = width * height * 3;
  const data = new Uint8Array(page * frames.length);
  frames.forEach((frame, i) => {
    if (frame.width !== width || frame.height !== height || frame.data.length !== page) {
      throw new RangeError(`encodeGif: frame ${i} is not ${width}x${height} RGB`);
    }
    data.set(frame.data, i * page);
  });
  const delay = frames.map((_, i) =>
    i === frames.length - 1 ? options.lastDelayMs ?? 10 * options.delayMs : options.delayMs
  );
  const buffer = await sharp(data, {
    raw: { width, height: height * frames.length, channels: 3, pageHeight: height },
  })
    .gif({
      delay,
      loop: options.loop ?? 0,
      dither: 0,
      effort: 7,
      interFrameMaxError: 0,
      keepDuplicateFrames: true,
    })
    .toBuffer();
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

/** The GIF of `states`: each frame shows the `count` samples of one state side by side. */
export function trajectoryGif(
  states: readonly Float32Array[],
  options: StateLayout & GifOptions,
): Promise<Uint8Array> {
  const frames = states.map((state) =>
    makeGrid(state, {
      count: options.count,
      height: options.height,
      width: options.width,
      channels: options.channels,
      columns: options.count,
      padding: options.padding,
    })
  );
  return encodeGif(frames, options);
}
