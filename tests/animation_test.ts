import assert from "node:assert/strict";
import sharp from "sharp";
import { encodeGif, trajectoryGif, trajectoryStrip } from "../src/io/animation.ts";

/** `frames` states of `count` 2x2 RGB images; sample r of state f is the flat grey (f - r) / 4. */
function states(frames: number, count: number): Float32Array[] {
  return Array.from(
    { length: frames },
    (_, f) => Float32Array.from({ length: count * 12 }, (_, i) => (f - Math.floor(i / 12)) / 4),
  );
}

Deno.test("trajectory strip: one row per sample, one column per state", () => {
  const strip = trajectoryStrip(states(3, 2), { count: 2, height: 2, width: 2, channels: 3 });
  // make_grid with padding 2: 3 columns of 2 + 4 * 2 padding = 14 wide, 2 rows: 2 * 2 + 3 * 2.
  assert.equal(strip.width, 14);
  assert.equal(strip.height, 10);
  const at = (x: number, y: number) => strip.data[(y * strip.width + x) * 3];
  const byte = (v: number) => Math.trunc(((v + 1) / 2) * 255 + 0.5);
  for (let r = 0; r < 2; r++) {
    for (let f = 0; f < 3; f++) {
      assert.equal(at(2 + f * 4, 2 + r * 4), byte((f - r) / 4), `sample ${r} state ${f}`);
    }
  }
  assert.equal(at(0, 0), 0, "black padding");
});

Deno.test("trajectory GIF: same frames, same bytes; frames, delays and loop as asked", async () => {
  const layout = { count: 2, height: 4, width: 4, channels: 3 as const, delayMs: 50 };
  const s = states(5, 2).map((x) => Float32Array.from({ length: 2 * 48 }, (_, i) => x[i % 24]));
  const a = await trajectoryGif(s, layout);
  const b = await trajectoryGif(s, layout);
  assert.deepEqual(a, b);
  assert.equal(new TextDecoder().decode(a.subarray(0, 6)), "GIF89a");
  const meta = await sharp(a, { animated: true }).metadata();
  assert.equal(meta.pages, 5);
  assert.equal(meta.pageHeight, 8);
  assert.equal(meta.width, 14);
  assert.deepEqual(meta.delay, [50, 50, 50, 50, 500]);
  assert.equal(meta.loop, 0);
  // Flat grey frames survive the palette exactly.
  const { data, info } = await sharp(a, { animated: true }).raw().toBuffer({
    resolveWithObject: true,
  });
  assert.equal(info.height, 40);
  const first = (f: number) => data[((f * 8 + 2) * 14 + 2) * info.channels];
  assert.deepEqual([0, 1, 2, 3, 4].map(first), [128, 159, 191, 223, 255]);
  await assert.rejects(() => encodeGif([], { delayMs: 10 }), RangeError);
});
