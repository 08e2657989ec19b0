/**
 * Figures that explain themselves: the captions are drawn in strips around the grids, the
 * grids' pixels are unchanged, and the diff composite's heat map adapts to the data.
 */
import assert from "node:assert/strict";
import { makeGrid, type RasterImage } from "../src/io/image.ts";
import { captionImage, textWidth } from "../src/io/caption.ts";
import {
  captionComposite,
  captionForward,
  captionRecovery,
  captionScale,
  captionTrajectory,
} from "../src/run/captions.ts";
import { composite } from "../src/run/diff.ts";

/** A grid of `count` 16 px images of smooth, distinct colours. */
function grid(count: number, columns: number): RasterImage {
  const size = 16;
  const images = new Float32Array(count * size * size * 3);
  for (let i = 0; i < images.length; i++) images[i] = Math.sin(i * 0.37) * 0.9;
  return makeGrid(images, { count, height: size, width: size, channels: 3, columns });
}

/** The `w` x `h` block of `img` at (x, y), as bytes. */
function block(img: RasterImage, at: { x: number; y: number; w: number; h: number }): number[] {
  const out: number[] = [];
  for (let y = at.y; y < at.y + at.h; y++) {
    const start = (y * img.width + at.x) * 3;
    out.push(...img.data.subarray(start, start + at.w * 3));
  }
  return out;
}

/** Whether the rectangle holds any pixel other than `bg` (drawn text). */
function hasInk(img: RasterImage, at: { x: number; y: number; w: number; h: number }, bg = 0) {
  return block(img, at).some((v) => v !== bg);
}

Deno.test("captionImage copies the grid unchanged into its margins and bands", async () => {
  const g = grid(4, 2); // 2 x 2 cells of 16 px: 38 x 38
  const out = await captionImage(g, {
    margins: { top: 5, left: 3 },
    bands: [{ y: 17, height: 4 }],
    captions: [],
  });
  assert.deepEqual([out.width, out.height], [41, 47]);
  assert.deepEqual(
    block(out, { x: 3, y: 5, w: 38, h: 18 }),
    block(g, { x: 0, y: 0, w: 38, h: 18 }),
  );
  assert.deepEqual(
    block(out, { x: 3, y: 27, w: 38, h: 20 }),
    block(g, { x: 0, y: 18, w: 38, h: 20 }),
  );
  assert.ok(!hasInk(out, { x: 3, y: 23, w: 38, h: 4 }), "an empty band is background");
});

Deno.test("small images are scaled up until the longest caption fits at 9 px", () => {
  const t1000 = ["t=1", "t=500", "t=1000"];
  const wide = textWidth("t=1000", 9);
  const at = (cellSize: number) => captionScale(t1000, { cellSize });
  assert.equal(at(8), Math.ceil(wide / 8));
  assert.ok(at(8) * 8 >= wide && (at(8) - 1) * 8 < wide, "the smallest factor that fits");
  assert.equal(at(64), 1, "64 px faces are left as they are");
  assert.ok(at(16) >= 2 && at(16) * 16 >= wide);
  assert.equal(captionScale(["t=1"], { cellSize: 1, minFont: 11 }), 8, "at most 8x");
});

Deno.test("forward.png: t under each image, the images byte-identical", async () => {
  const g = grid(64, 8); // 8 x 8 cells: 146 x 146
  const t = Array.from({ length: 64 }, (_, i) => 1 + Math.floor((i * 99) / 63));
  const out = await captionForward(g, { cells: { size: 16, columns: 8, rows: 8 }, t });
  const band = (out.height - 146 - 14) / 8; // a 14 px title, then a band under each row
  assert.ok(Number.isInteger(band) && band >= 10, `band ${band}`);
  for (let row = 0; row < 8; row++) {
    const y = 14 + row * (18 + band);
    // Row `row` of the grid (its top padding and images) sits unchanged ...
    assert.deepEqual(
      block(out, { x: 0, y, w: 146, h: 18 }),
      block(g, { x: 0, y: row * 18, w: 146, h: 18 }),
    );
    // ... with the t of each image written under it.
    for (let column = 0; column < 8; column++) {
      assert.ok(hasInk(out, { x: 2 + column * 18, y: y + 18, w: 16, h: band }), `${row},${column}`);
    }
  }
  assert.ok(hasInk(out, { x: 0, y: 0, w: 146, h: 14 }), "the title");
});

Deno.test("recovery.png names its columns and each row's t; trajectory.png shows t per frame", async () => {
  const g = grid(8, 4); // 2 rows of 4 cells: 74 x 38
  const rec = await captionRecovery(g, {
    cells: { size: 16, columns: 4, rows: 2 },
    rowT: [100, 500],
  });
  const left = rec.width - 74;
  const top = rec.height - 38;
  assert.ok(left > 20 && top > 8, `${left} x ${top}`);
  assert.deepEqual(
    block(rec, { x: left, y: top, w: 74, h: 38 }),
    block(g, { x: 0, y: 0, w: 74, h: 38 }),
  );
  for (let c = 0; c < 4; c++) assert.ok(hasInk(rec, { x: left + 2 + c * 18, y: 0, w: 16, h: top }));
  for (let r = 0; r < 2; r++) assert.ok(hasInk(rec, { x: 0, y: top + 2 + r * 18, w: left, h: 16 }));

  const strip = grid(6, 3); // 2 samples x 3 frames
  const tr = await captionTrajectory(strip, {
    cells: { size: 16, columns: 3, rows: 2 },
    t: [8, 4, 0],
  });
  assert.equal(tr.width, strip.width);
  const head = tr.height - strip.height;
  assert.deepEqual(
    block(tr, { x: 0, y: head, w: strip.width, h: strip.height }),
    block(strip, { x: 0, y: 0, w: strip.width, h: strip.height }),
  );
  for (let c = 0; c < 3; c++) assert.ok(hasInk(tr, { x: 2 + c * 18, y: 0, w: 16, h: head }));
});

Deno.test("diff composite: panels A, B, |A−B| labelled; the heat map's scale is the largest difference", async () => {
  const w = 8;
  const a = {
    width: w,
    height: w,
    channels: 3 as const,
    data: new Uint8Array(w * w * 3).fill(100),
  };
  const bData = a.data.slice();
  bData.fill(110, 0, 3); // pixel 0 differs by 10 in every channel
  bData.fill(105, 3, 6); // pixel 1 by 5
  const b = { ...a, data: bData };
  const c = composite(a, b);
  assert.equal(c.scale, 10);
  const px = (x: number, y: number) =>
    Array.from(c.data.subarray((y * c.width + x) * 3, (y * c.width + x) * 3 + 3));
  const x0 = 2 * (w + 4);
  assert.deepEqual(px(x0, 0), [255, 255, 255], "the largest difference is white");
  assert.deepEqual(px(x0 + 1, 0), [255, 128, 0], "half of it is orange");
  assert.deepEqual(px(x0 + 2, 0), [0, 0, 0], "no difference is black");
  const panels = [{ x: 0, name: "A" }, { x: w + 4, name: "B" }, { x: x0, name: "|A−B|" }];
  const out = await captionComposite(c, { panels, scale: c.scale });
  const top = 15;
  assert.deepEqual(
    block(out, { x: 0, y: top, w: c.width, h: c.height }),
    block(c as RasterImage, { x: 0, y: 0, w: c.width, h: c.height }),
  );
  for (const p of panels) assert.ok(hasInk(out, { x: p.x, y: 0, w: 6, h: top }, 255), p.name);
  assert.ok(
    hasInk(out, { x: 0, y: top + c.height, w: out.width, h: out.height - top - c.height }, 255),
  );
});
