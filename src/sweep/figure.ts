/**
 * `sweep.png`: the sample grids of a sweep's complete points stacked in index order, each under
 * a caption strip that names its point (`point 2: schedule.timesteps=300 seed=0`), so that the
 * picture answers the sweep's question on its own.
 * @module
 */
import { captionImage, stripHeight, textWidth } from "../io/caption.ts";
import { decodePng, type RasterImage, writePng } from "../io/image.ts";
import { describePoint } from "./points.ts";
import { indexedPath, type SweepIndex } from "./sweep_index.ts";

/** Pixels of black between two points' grids. */
const GAP = 4;

/**
 * Writes `sweep.png` beside `indexPath` from the `samples.png` of every complete point; returns
 * its path, or undefined when no point has samples yet.
 */
export async function writeSweepFigure(
  index: SweepIndex,
  indexPath: string,
): Promise<string | undefined> {
  const panels: RasterImage[] = [];
  for (const point of index.points) {
    if (point.status !== "complete") continue;
    let grid: Required<RasterImage>;
    try {
      grid = await decodePng(
        await Deno.readFile(`${indexedPath(indexPath, point.run)}/samples.png`),
      );
    } catch {
      continue; // a complete run always has samples.png; a removed one is left out
    }
    const rgb = grid.channels === 3 ? grid : dropAlpha(grid);
    const text = `point ${point.index}: ${describePoint(point)}`;
    const top = stripHeight();
    panels.push(
      await captionImage(rgb, {
        margins: { top, right: Math.max(0, textWidth(text) + 4 - rgb.width) },
        captions: [{ text, x: 2, y: top - 4, anchor: "start" }],
      }),
    );
  }
  if (panels.length === 0) return undefined;
  const width = Math.max(...panels.map((p) => p.width));
  const height = panels.reduce((h, p) => h + p.height, 0) + GAP * (panels.length - 1);
  const data = new Uint8Array(width * height * 3);
  let y = 0;
  for (const p of panels) {
    for (let row = 0; row < p.height; row++) {
      data.set(
        p.data.subarray(row * p.width * 3, (row + 1) * p.width * 3),
        ((y + row) * width) * 3,
      );
    }
    y += p.height + GAP;
  }
  const path = indexedPath(indexPath, "sweep.png");
  await writePng(path, { width, height, data });
  return path;
}

function dropAlpha(image: Required<RasterImage>): RasterImage {
  const n = image.width * image.height;
  const data = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < 3; c++) data[i * 3 + c] = image.data[i * image.channels + c];
  }
  return { width: image.width, height: image.height, data };
}
