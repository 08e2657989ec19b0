/**
 * The captions of a run's figures: t under each image of `forward.png`, the column names and
 * each row's t in `recovery.png`, t above each frame of `trajectory.png`, and the panel names
 * and heat-map scale of `diff`'s composites. Each takes the grid as `makeGrid` draws it and
 * returns it with caption strips ({@linkcode captionImage}); the images' pixels are unchanged.
 * @module
 */
import {
  type Caption,
  captionImage,
  cellOrigin,
  fittingFontSize,
  type GridCells,
  stripHeight,
  textWidth,
  upscale,
} from "../io/caption.ts";
import type { RasterImage } from "../io/image.ts";

/**
 * The whole factor (1 to 8) by which a grid of `cellSize` px images is to be scaled up (nearest
 * neighbour) for every one of `labels` to fit within the width of its image at `minFont` px
 * (default 9), the padding left as the gap between neighbours: 8 or 16 px faces would otherwise
 * get numbers that run into each other.
 */
export function captionScale(
  labels: readonly string[],
  options: { cellSize: number; minFont?: number },
): number {
  const widest = Math.max(...labels.map((l) => textWidth(l, options.minFont ?? 9)));
  return Math.min(8, Math.max(1, Math.ceil(widest / options.cellSize)));
}

/**
 * `grid` (cells of `layout.size` px, padding 2) scaled up by {@link captionScale} for `labels`,
 * and its cells at that scale: what the caption functions below take.
 */
export function scaleForCaptions(
  grid: RasterImage,
  layout: Omit<GridCells, "padding"> & { labels: readonly string[] },
): { grid: RasterImage; cells: GridCells } {
  const { size, columns, rows, labels } = layout;
  const scale = captionScale(labels, { cellSize: size });
  return {
    grid: upscale(grid, scale),
    cells: { size: size * scale, columns, rows, padding: 2 * scale },
  };
}

/** `t=12` when it fits `width` at 7 px or more, else `12`: the labels of a row of cells. */
function tLabels(ts: readonly number[], width: number): { labels: string[]; size: number } {
  const long = ts.map((t) => `t=${t}`);
  const size = fittingFontSize(long, width);
  if (size >= 7) return { labels: long, size };
  const short = ts.map(String);
  return { labels: short, size: fittingFontSize(short, width) };
}

/**
 * forward.png: a strip under each row of images with the t of each image (`t[k]` for image k in
 * grid order, 1-based as in x_t: the number of noising steps).
 */
export async function captionForward(
  grid: RasterImage,
  options: { cells: GridCells; t: readonly number[] },
): Promise<RasterImage> {
  const { cells, t } = options;
  const { labels, size: font } = tLabels(t, cells.size);
  const band = stripHeight(font);
  const bands: { y: number; height: number }[] = [];
  const captions: Caption[] = [];
  for (let row = 0; row < cells.rows; row++) {
    const bottom = cellOrigin(cells, { row, column: 0 }).y + cells.size; // first row below
    bands.push({ y: bottom - 1, height: band });
    for (let column = 0; column < cells.columns; column++) {
      const k = row * cells.columns + column;
      if (k >= t.length) break;
      captions.push({
        text: labels[k],
        x: cellOrigin(cells, { row, column }).centre,
        y: bottom + row * band + Math.round(font * 1.05),
        size: font,
      });
    }
  }
  // A title when it fits: what the numbers are.
  const title = ["x_t ~ q(x_t | x_0), t under each image", "t under each image"]
    .find((text) => textWidth(text, 9) <= grid.width);
  const top = title ? stripHeight(9) : 0;
  if (title) {
    captions.forEach((c) => (c.y += top));
    captions.push({ text: title, x: 2, y: top - 4, anchor: "start", size: 9 });
  }
  return await captionImage(grid, { margins: { top }, bands, captions });
}

/**
 * recovery.png: the column names above (x_0, x_t, and the recoveries with σ² = β and β̃) and
 * the t of each row on the left (`rowT[r]`).
 */
export async function captionRecovery(
  grid: RasterImage,
  options: { cells: GridCells; rowT: readonly number[] },
): Promise<RasterImage> {
  const { cells, rowT } = options;
  const width = cells.size + (cells.padding ?? 2);
  const long = ["x_0", "x_t", "σ²=β", "σ²=β̃"];
  let names = long;
  let font = fittingFontSize(names, width);
  if (font < 8) {
    names = ["x_0", "x_t", "β", "β̃"];
    font = Math.max(fittingFontSize(names, width), 7);
  }
  const rowLabels = rowT.map((t) => `t=${t}`);
  const left = Math.max(...rowLabels.map((l) => textWidth(l, font))) + 6;
  const top = stripHeight(font);
  const captions: Caption[] = names.map((text, column) => ({
    text,
    x: left + cellOrigin(cells, { row: 0, column }).centre,
    y: top - Math.round(font * 0.4),
    size: font,
  }));
  rowLabels.forEach((text, row) => {
    const { y } = cellOrigin(cells, { row, column: 0 });
    captions.push({
      text,
      x: left - 3,
      y: top + y + Math.round(cells.size / 2 + font * 0.35),
      anchor: "end",
      size: font,
    });
  });
  return await captionImage(grid, { margins: { top, left }, captions });
}

/** trajectory.png: the t of each column (x_T on the left ... the sample, t = 0) above it. */
export async function captionTrajectory(
  grid: RasterImage,
  options: { cells: GridCells; t: readonly number[] },
): Promise<RasterImage> {
  const { cells, t } = options;
  const { labels, size: font } = tLabels(t, cells.size);
  const top = stripHeight(font);
  const captions = labels.map((text, column) => ({
    text,
    x: cellOrigin(cells, { row: 0, column }).centre,
    y: top - Math.round(font * 0.4),
    size: font,
  }));
  return await captionImage(grid, { margins: { top }, captions });
}

/**
 * A diff composite (`A | B | |A−B|`): the panel names above each panel and, under them, what the
 * heat map's full scale is (`scale` of 255, mean over channels).
 */
export async function captionComposite(
  image: RasterImage,
  options: { panels: { x: number; name: string }[]; scale?: number },
): Promise<RasterImage> {
  const font = 10;
  const top = stripHeight(font);
  const bottom = options.scale === undefined ? 0 : stripHeight(font);
  const captions: Caption[] = options.panels.map((p) => ({
    text: p.name,
    x: p.x,
    y: top - 4,
    anchor: "start",
    size: font,
  }));
  const note = options.scale === undefined ? "" : `|A−B|: white = ${options.scale}/255 (max)`;
  const right = Math.max(0, textWidth(note, 9) + 4 - image.width);
  if (note) {
    captions.push({
      text: note,
      x: 2,
      y: top + image.height + bottom - 4,
      anchor: "start",
      size: 9,
    });
  }
  return await captionImage(image, {
    margins: { top, bottom, right },
    captions,
    background: [255, 255, 255],
    color: "#000000",
  });
}
