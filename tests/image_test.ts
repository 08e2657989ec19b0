import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodePng, encodePng, makeGrid, writePng } from "../src/io/image.ts";

/** The RGB triple of grid pixel (x, y). */
function at(grid: { width: number; data: Uint8Array }, x: number, y: number): number[] {
  const p = (y * grid.width + x) * 3;
  return Array.from(grid.data.subarray(p, p + 3));
}

/** `count` images of `h x w x 3` where every value of image k is `values[k]`. */
function constantImages(values: number[], h: number, w: number): Float32Array {
  const out = new Float32Array(values.length * h * w * 3);
  values.forEach((v, k) => out.fill(v, k * h * w * 3, (k + 1) * h * w * 3));
  return out;
}

Deno.test("makeGrid: layout of 3 images of 2x2 in 2 columns", () => {
  const grid = makeGrid(constantImages([-1, 1, 0], 2, 2), {
    count: 3,
    height: 2,
    width: 2,
    channels: 3,
    columns: 2,
  });
  // xmaps = 2, ymaps = 2, cell = 2 + 2 = 4: width = 2 * 4 + 2 = 10, height = 2 * 4 + 2 = 10.
  assert.equal(grid.width, 10);
  assert.equal(grid.height, 10);
  assert.equal(grid.data.length, 10 * 10 * 3);
  // Images start at x, y in {2, 6}; -1 -> 0, 1 -> 255, 0 -> 0.5 * 255 + 0.5 = 128 (truncated).
  const expected = (x: number, y: number): number => {
    const inX = x % 4 >= 2;
    const inY = y % 4 >= 2;
    if (!inX || !inY || x >= 10 || y >= 10) return 0;
    const k = Math.floor((y - 2) / 4) * 2 + Math.floor((x - 2) / 4);
    return [0, 255, 128, 0][k]; // cell 3 is empty: pad value
  };
  for (let y = 0; y < 10; y++) {
    for (let x = 0; x < 10; x++) {
      const e = expected(x, y);
      assert.deepEqual(at(grid, x, y), [e, e, e], `pixel ${x},${y}`);
    }
  }
});

Deno.test("makeGrid: one row, pad value, clamping and torch rounding", () => {
  const grid = makeGrid(constantImages([0.5, -3, 2], 2, 2), {
    count: 3,
    height: 2,
    width: 2,
    channels: 3,
    columns: 3,
    padValue: 1,
  });
  assert.equal(grid.width, 14);
  assert.equal(grid.height, 6);
  assert.deepEqual(at(grid, 0, 0), [255, 255, 255]);
  assert.deepEqual(at(grid, 4, 2), [255, 255, 255]); // between images
  assert.deepEqual(at(grid, 2, 2), [191, 191, 191]); // 0.75 * 255 + 0.5 = 191.75
  assert.deepEqual(at(grid, 7, 3), [0, 0, 0]); // -3 clamps to -1
  assert.deepEqual(at(grid, 10, 2), [255, 255, 255]); // 2 clamps to 1

  // Channels are kept apart and NHWC order is respected.
  const rgb = new Float32Array([-1, 0, 1, 1, 0, -1]);
  const g2 = makeGrid(rgb, { count: 2, height: 1, width: 1, channels: 3, padding: 1 });
  assert.equal(g2.width, 5);
  assert.equal(g2.height, 3);
  assert.deepEqual(at(g2, 1, 1), [0, 128, 255]);
  assert.deepEqual(at(g2, 3, 1), [255, 128, 0]);
  assert.deepEqual(at(g2, 2, 1), [0, 0, 0]);
});

Deno.test("makeGrid: a single image has no padding; grey images become RGB", () => {
  const single = makeGrid(new Float32Array([-1, 1, 1, -1]), {
    count: 1,
    height: 2,
    width: 2,
    channels: 1,
  });
  assert.equal(single.width, 2);
  assert.equal(single.height, 2);
  assert.deepEqual(Array.from(single.data), [0, 0, 0, 255, 255, 255, 255, 255, 255, 0, 0, 0]);
  assert.throws(() =>
    makeGrid(new Float32Array(3), { count: 2, height: 1, width: 1, channels: 3 })
  );
});

Deno.test("encodePng / decodePng: round trip, deterministic bytes, atomic write", async () => {
  const width = 7;
  const height = 5;
  const data = Uint8Array.from({ length: width * height * 3 }, (_, i) => (i * 37) % 256);
  const png = await encodePng({ width, height, data });
  assert.deepEqual(Array.from(png.subarray(0, 8)), [137, 80, 78, 71, 13, 10, 26, 10]);
  const decoded = await decodePng(png);
  assert.equal(decoded.width, width);
  assert.equal(decoded.height, height);
  assert.equal(decoded.channels, 3);
  assert.deepEqual(decoded.data, data);
  assert.deepEqual(await encodePng({ width, height, data }), png);
  assert.deepEqual(await encodePng(decoded as Parameters<typeof encodePng>[0]), png);
  // No text, time or colour-profile chunks.
  const text = new TextDecoder("latin1").decode(png);
  for (const chunk of ["tEXt", "zTXt", "iTXt", "tIME", "iCCP", "eXIf"]) {
    assert.ok(!text.includes(chunk), chunk);
  }

  const rgba = Uint8Array.from({ length: 2 * 2 * 4 }, (_, i) => i * 15);
  const rgbaDecoded = await decodePng(
    await encodePng({ width: 2, height: 2, data: rgba, channels: 4 }),
  );
  assert.equal(rgbaDecoded.channels, 4);
  assert.deepEqual(rgbaDecoded.data, rgba);

  await assert.rejects(encodePng({ width, height, data: data.subarray(1) }), RangeError);

  const dir = await mkdtemp(join(tmpdir(), "ddpm-lab-image-"));
  try {
    const path = join(dir, "grid.png");
    await writePng(path, { width, height, data });
    await writePng(path, { width, height, data });
    assert.deepEqual(new Uint8Array(await readFile(path)), png);
    assert.deepEqual(await readdir(dir), ["grid.png"]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
