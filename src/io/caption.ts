/**
 * Captions for image grids: a strip left of each row saying what the row shows (the labels a
 * conditional sampler asked for), rendered as SVG text by sharp (librsvg) and composited into
 * the PNG, with the grid scaled up (nearest neighbour) so that small images stay legible.
 * @module
 */
import { Buffer } from "node:buffer";
import sharp from "sharp";
import type { RasterImage } from "./image.ts";

/** Options of {@link captionRows}. */
export interface CaptionOptions {
  /** One caption per row of the grid. */
  rows: string[];
  /** Height of one grid cell (image side + padding) before scaling. */
  cell: number;
  /** Padding above the first row (the grid's padding). */
  padding: number;
  /** Integer upscaling of the grid (nearest neighbour); default 1. */
  scale?: number;
  /** Width of the caption strip in pixels; default 7 px per character of the longest caption. */
  stripWidth?: number;
}

function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Nearest-neighbour integer upscaling of an RGB(A) raster. */
export function upscale(image: RasterImage, factor: number): RasterImage {
  if (factor === 1) return image;
  const c = image.channels ?? 3;
  const width = image.width * factor;
  const height = image.height * factor;
  const data = new Uint8Array(width * height * c);
  for (let y = 0; y < height; y++) {
    const sy = Math.floor(y / factor);
    for (let x = 0; x < width; x++) {
      const from = (sy * image.width + Math.floor(x / factor)) * c;
      data.set(image.data.subarray(from, from + c), (y * width + x) * c);
    }
  }
  return { width, height, data, channels: image.channels };
}

/**
 * The grid (RGB) scaled by `scale`, with a white strip on its left holding each row's caption,
 * vertically centred on the row. Returns an RGB raster.
 */
export async function captionRows(
  grid: RasterImage,
  options: CaptionOptions,
): Promise<RasterImage> {
  const scale = options.scale ?? 1;
  const big = upscale(grid, scale);
  const cell = options.cell * scale;
  const top = options.padding * scale;
  const fontSize = Math.max(9, Math.min(14, Math.floor(cell * 0.4)));
  const longest = Math.max(1, ...options.rows.map((r) => r.length));
  const strip = options.stripWidth ?? Math.ceil(longest * fontSize * 0.62) + 12;
  const width = strip + big.width;
  const texts = options.rows.map((row, r) => {
    const y = top + r * cell + cell / 2;
    return `<text x="6" y="${y.toFixed(1)}" dominant-baseline="middle">${escapeXml(row)}</text>`;
  });
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${strip}" height="${big.height}">` +
    `<rect width="100%" height="100%" fill="#ffffff"/>` +
    `<g font-family="DejaVu Sans Mono, monospace" font-size="${fontSize}" fill="#000000">` +
    `${texts.join("")}</g></svg>`;
  const channels = big.channels ?? 3;
  const out = await sharp({
    create: { width, height: big.height, channels: 3, background: "#ffffff" },
  })
    .composite([
      { input: Buffer.from(svg, "utf8"), left: 0, top: 0 },
      {
        input: Buffer.from(big.data.buffer, big.data.byteOffset, big.data.byteLength),
        raw: { width: big.width, height: big.height, channels },
        left: strip,
        top: 0,
      },
    ])
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  return {
    width: out.info.width,
    height: out.info.height,
    channels: 3,
    data: new Uint8Array(out.data.buffer, out.data.byteOffset, out.data.byteLength),
  };
}
