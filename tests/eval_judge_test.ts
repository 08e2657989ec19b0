/**
 * The attribute judge on labelled shapes it must learn: coloured squares on the left or right.
 */
import assert from "node:assert/strict";
import { initBackend } from "../src/backend/mod.ts";
import {
  attributeDistance,
  judgeAccuracy,
  type LabelledImages,
  trainJudge,
} from "../src/eval/judge.ts";
import { deriveRng } from "../src/rng.ts";

const COLOURS: [number, number, number][] = [[230, 30, 30], [30, 200, 40], [40, 60, 230]];

/** `count` 12x12 images: a 5x5 square of colour `colour` on the `side` half, noisy grey ground. */
function shapes(count: number, stream: string, only?: { colour: number }): LabelledImages {
  const size = 12;
  const rng = deriveRng(5, stream);
  const images = new Uint8Array(count * size * size * 3);
  const colour = new Int32Array(count);
  const side = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    colour[i] = only?.colour ?? rng.int(3);
    side[i] = rng.int(2);
    const x0 = side[i] === 0 ? 1 + rng.int(2) : 6 + rng.int(2);
    const y0 = 1 + rng.int(6);
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const inside = x >= x0 && x < x0 + 5 && y >= y0 && y < y0 + 5;
        for (let c = 0; c < 3; c++) {
          images[((i * size + y) * size + x) * 3 + c] = inside
            ? COLOURS[colour[i]][c]
            : 100 + rng.int(40);
        }
      }
    }
  }
  return {
    count,
    size,
    pixels: images,
    attributes: [
      { name: "colour", count: 3, values: ["red", "green", "blue"] },
      { name: "side", count: 2 },
    ],
    labels: [colour, side],
  };
}

Deno.test("judge: learns labelled shapes, scores distributions and requested labels, caches", async () => {
  await initBackend("wasm");
  const cacheDir = await Deno.makeTempDir();
  try {
    const data = shapes(400, "train");
    const settings = { seed: 1, steps: 80, width: 8, batchSize: 32, cacheDir };
    const judge = await trainJudge(data, settings);
    assert.equal(judge.cached, false);
    assert.equal(judge.heldOutCount, 80);
    assert.ok(judge.accuracy.colour >= 0.95, `colour accuracy ${judge.accuracy.colour}`);
    assert.ok(judge.accuracy.side >= 0.95, `side accuracy ${judge.accuracy.side}`);
    assert.ok(judge.chance.colour < 0.5);

    // fresh images from the same distribution: close to the real distribution
    const same = shapes(300, "same");
    const near = await attributeDistance(judge, same.pixels, same.count);
    assert.ok(near.perAttribute.colour < 0.12, JSON.stringify(near));
    // only red squares: colour is 2/3 away from a uniform distribution, side is not
    const red = shapes(300, "red", { colour: 0 });
    const far = await attributeDistance(judge, red.pixels, red.count);
    assert.ok(Math.abs(far.perAttribute.colour - 2 / 3) < 0.1, JSON.stringify(far));
    assert.ok(far.perAttribute.side < 0.12, JSON.stringify(far));

    // conditional use: accuracy on the requested labels
    const right = await judgeAccuracy(judge, { pixels: same.pixels, count: same.count }, {
      colour: same.labels[0],
    });
    assert.ok(right.colour >= 0.95, JSON.stringify(right));
    const wrong = await judgeAccuracy(judge, { pixels: same.pixels, count: same.count }, {
      colour: same.labels[0].map((v) => (v + 1) % 3),
    });
    assert.ok(wrong.colour <= 0.05, JSON.stringify(wrong));

    // second time: from the cache, same numbers and predictions
    const again = await trainJudge(data, settings);
    assert.equal(again.cached, true);
    assert.deepEqual(again.accuracy, judge.accuracy);
    assert.deepEqual(await again.predict(same.pixels, 50), await judge.predict(same.pixels, 50));
    judge.dispose();
    again.dispose();
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});
