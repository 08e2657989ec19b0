/**
 * Figures that explain themselves: captions in strips around (and between the rows of) an image
 * grid, rendered from an SVG overlay composited with sharp (librsvg, DejaVu Sans from the system
 * fonts). The pixels of the grid are copied unchanged: only their position moves.
 * @module
 */
import { Buffer } from "node:buffer";
import sharp from "sharp";
import type { RasterImage } from "./image.ts";

/** One line of text, positioned in the captioned image. */
export interface Caption {
  /** The text (any Unicode the font has: β, β̃, −, ...). */
  text: string;
  /** x of the anchor, in pixels. */
  x: number;
  /** y of the text's baseline, in pixels. */
  y: number;
  /** Which point of the text `x` is (default `middle`). */
  anchor?: "start" | "middle" | "end";
  /** Font size in pixels (default {@linkcode CAPTION_FONT_SIZE}). */
  size?: number;
}

/** The font size of captions, in pixels. */
export const CAPTION_FONT_SIZE = 10;
/** Height of a one-line caption strip for a font size. */
export const stripHeight = (fontSize = CAPTION_FONT_SIZE): number => Math.ceil(fontSize * 1.5);
/** Approximate width of `text` in DejaVu Sans at `fontSize` (for fitting labels). */
export const textWidth = (text: string, fontSize = CAPTION_FONT_SIZE): number =>
  Math.ceil([...text].length * fontSize * 0.62);

const escapeXml = (s: string): string =>
  s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");

/** Where to put the grid in the captioned image, and the strips' colours. */
export interface CaptionLayout {
  /** Pixels added above, below, left and right of the grid (default 0). */
  margins?: { top?: number; bottom?: number; left?: number; right?: number };
  /**
   * Strips inserted inside the grid: `height` pixels of background after pixel row `y` of the
   * grid (each y once, in increasing order; e.g. under each row of images).
   */
  bands?: { y: number; height: number }[];
  /** The texts, in coordinates of the captioned image. */
  captions: Caption[];
  /** Background of the strips, RGB (default black, as grid padding). */
  background?: [number, number, number];
  /** Colour of the text (default white). */
  color?: string;
}

/**
 * `grid` (RGB) with strips around it and between its pixel rows and the captions drawn in them.
 * The grid's pixels keep their values; the strips hold only the background and the text.
 */
export async function captionImage(grid: RasterImage, layout: CaptionLayout): Promise<RasterImage> {
  if ((grid.channels ?? 3) !== 3) throw new RangeError("captionImage: RGB images only");
  const m = { top: 0, bottom: 0, left: 0, right: 0, ...layout.margins };
  const bands = layout.bands ?? [];
  const extra = bands.reduce((a, b) => a + b.height, 0);
  const width = grid.width + m.left + m.right;
  const height = grid.height + m.top + m.bottom + extra;
  const [r, g, b] = layout.background ?? [0, 0, 0];
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < data.length; i += 3) {
    data[i] = r;
    data[i + 1] = g;
    data[i + 2] = b;
  }
  let shift = m.top;
  let band = 0;
  for (let y = 0; y < grid.height; y++) {
    const src = y * grid.width * 3;
    data.set(grid.data.subarray(src, src + grid.width * 3), ((y + shift) * width + m.left) * 3);
    while (band < bands.length && bands[band].y === y) shift += bands[band++].height;
  }
  if (layout.captions.length === 0) return { width, height, data };
  const color = layout.color ?? "#ffffff";
  const texts = layout.captions.map((c) =>
    `<text x="${c.x}" y="${c.y}" font-size="${c.size ?? CAPTION_FONT_SIZE}" ` +
    `text-anchor="${c.anchor ?? "middle"}">${escapeXml(c.text)}</text>`
  ).join("");
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">` +
    `<g font-family="DejaVu Sans, sans-serif" fill="${color}">${texts}</g></svg>`;
  const out = await sharp(data, { raw: { width, height, channels: 3 } })
    .composite([{ input: Buffer.from(svg), top: 0, left: 0 }])
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  return {
    width: out.info.width,
    height: out.info.height,
    data: new Uint8Array(out.data.buffer, out.data.byteOffset, out.data.byteLength),
  };
}

/** Cell geometry of a `makeGrid` grid: `count` cells of `size` pixels, `columns` per row. */
export interface GridCells {
  /** Side of each image. */
  size: number;
  /** Images per row. */
  columns: number;
  /** Rows of images. */
  rows: number;
  /** Padding between and around images (default 2). */
  padding?: number;
}

/** The left x and top y of cell (row, column) in the grid; the cell's centre x. */
export function cellOrigin(
  cells: GridCells,
  at: { row: number; column: number },
): { x: number; y: number; centre: number } {
  const pad = cells.padding ?? 2;
  const x = pad + at.column * (cells.size + pad);
  return { x, y: pad + at.row * (cells.size + pad), centre: x + cells.size / 2 };
}

/** The largest font size from 11 down to 6 px at which every label fits `width` pixels. */
export function fittingFontSize(labels: readonly string[], width: number): number {
  for (let size = 11; size > 6; size--) {
    if (labels.every((l) => textWidth(l, size) <= width)) return size;
  }
  return 6;
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

/** Options of {@link captionRows}. */
export interface RowCaptionOptions {
  /** One caption per row of the grid. */
  rows: string[];
  /** Height of one grid cell (image side + padding) before scaling. */
  cell: number;
  /** Padding above the first row (the grid's padding). */
  padding: number;
  /** Integer upscaling of the grid (nearest neighbour); default 1. */
  scale?: number;
  /** Width of the caption strip in pixels; default what the longest caption needs. */
  stripWidth?: number;
}

/**
 * The grid (RGB) scaled by `scale` with a white strip on its left holding each row's caption
 * in black, vertically centred on the row (a conditional sampler's "what each row asked for").
 */
export function captionRows(grid: RasterImage, options: RowCaptionOptions): Promise<RasterImage> {
  const scale = options.scale ?? 1;
  const big = upscale(grid, scale);
  const cell = options.cell * scale;
  const top = options.padding * scale;
  const size = Math.max(9, Math.min(14, Math.floor(cell * 0.4)));
  const strip = options.stripWidth ??
    Math.max(1, ...options.rows.map((r) => textWidth(r, size))) + 12;
  return captionImage(big, {
    margins: { left: strip },
    background: [255, 255, 255],
    color: "#000000",
    captions: options.rows.map((text, r) => ({
      text,
      x: 6,
      y: Math.round(top + r * cell + cell / 2 + size * 0.35),
      anchor: "start",
      size,
    })),
  });
}
