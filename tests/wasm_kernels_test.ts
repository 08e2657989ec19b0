/**
 * The wasm conv2d gradient kernels of `src/backend/wasm_kernels.ts` against the cpu backend.
 * @module
 */
import assert from "node:assert/strict";
import { tf } from "../src/tf.ts";
import { initBackend } from "../src/backend/mod.ts";
import { registerWasmKernels } from "../src/backend/wasm_kernels.ts";
import { deriveRng, type Rng } from "../src/rng.ts";

type Pad = "same" | "valid" | number | [
  [number, number],
  [number, number],
  [number, number],
  [number, number],
];

interface Case {
  x: [number, number, number, number];
  filter: [number, number, number, number];
  strides: [number, number];
  pad: Pad;
  xValues: Float32Array;
  filterValues: Float32Array;
  dyValues?: Float32Array;
}

interface Grads {
  dx: Float32Array;
  dw: Float32Array;
  dyShape: number[];
}

/** The gradients of `sum(conv2d(x, w) * dy)` on the active backend. */
function convGrads(c: Case, dyValues: Float32Array | undefined): Grads {
  return tf.tidy(() => {
    const x = tf.tensor4d(c.xValues, c.x);
    const w = tf.tensor4d(c.filterValues, c.filter);
    const round = typeof c.pad === "number" ? "floor" : undefined;
    const f = (a: tf.Tensor, b: tf.Tensor): tf.Tensor =>
      tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.strides, c.pad, "NHWC", 1, round);
    const y = f(x, w);
    const dy = dyValues === undefined
      ? tf.tensor(deriveRng(7, `dy/${y.shape}`).normal(y.size), y.shape)
      : tf.tensor(dyValues, y.shape);
    const [dx, dw] = tf.grads(f)([x, w], dy);
    return {
      dx: dx.dataSync() as Float32Array,
      dw: dw.dataSync() as Float32Array,
      dyShape: y.shape,
    };
  });
}

function maxAbsDiff(a: Float32Array, b: Float32Array): { diff: number; scale: number } {
  assert.equal(a.length, b.length);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return { diff, scale };
}

function pick<T>(rng: Rng, items: readonly T[]): T {
  return items[rng.int(items.length)];
}

function randomCases(count: number): Case[] {
  const rng = deriveRng(1, "tests/wasm_kernels");
  const cases: Case[] = [];
  const pads: Pad[] = ["same", "valid", 0, 1, 2, [[0, 0], [1, 0], [0, 2], [0, 0]]];
  while (cases.length < count) {
    const k = pick(rng, [1, 2, 3]);
    const kw = rng.int(4) === 0 ? pick(rng, [1, 2, 3]) : k;
    const sh = pick(rng, [1, 2]);
    const sw = rng.int(4) === 0 ? pick(rng, [1, 2]) : sh;
    const pad = pads[cases.length % pads.length];
    // tfjs 4.22 gets output shapes wrong for numeric pads unless filter and strides are square.
    if (typeof pad === "number" && (kw !== k || sw !== sh)) continue;
    const b = 1 + rng.int(3);
    const h = 4 + rng.int(6);
    const w = 4 + rng.int(6);
    const cin = 1 + rng.int(8);
    const cout = 1 + rng.int(8);
    const x: Case["x"] = [b, h, w, cin];
    const filter: Case["filter"] = [k, kw, cin, cout];
    cases.push({
      x,
      filter,
      strides: [sh, sw],
      pad,
      xValues: rng.normal(b * h * w * cin),
      filterValues: rng.normal(k * kw * cin * cout),
    });
  }
  return cases;
}

Deno.test("wasm conv2d gradients match the cpu backend", async () => {
  const cases = randomCases(72);
  await initBackend("cpu");
  const expected = cases.map((c) => convGrads(c, undefined));
  await initBackend("wasm");
  registerWasmKernels(); // idempotent
  for (const [i, c] of cases.entries()) {
    const ref = expected[i];
    const got = convGrads(c, undefined);
    assert.deepEqual(got.dyShape, ref.dyShape);
    const label = `x ${c.x} filter ${c.filter} strides ${c.strides} pad ${JSON.stringify(c.pad)}`;
    for (const key of ["dx", "dw"] as const) {
      const { diff, scale } = maxAbsDiff(got[key], ref[key]);
      assert.ok(diff <= 1e-4 * (1 + scale), `${key} of ${label}: max diff ${diff}, scale ${scale}`);
    }
  }
});

Deno.test("wasm conv2d gradients leak no tensors and give the same bits on rerun", async () => {
  await initBackend("wasm");
  const backend = tf.backend() as unknown as { numDataIds(): number };
  const rng = deriveRng(2, "tests/wasm_kernels/leak");
  const c: Case = {
    x: [2, 9, 8, 3],
    filter: [3, 3, 3, 5],
    strides: [2, 2],
    pad: "same",
    xValues: rng.normal(2 * 9 * 8 * 3),
    filterValues: rng.normal(3 * 3 * 3 * 5),
  };
  const dy = rng.normal(2 * 5 * 4 * 5);
  const first = convGrads(c, dy);
  const tensors = tf.memory().numTensors;
  const dataIds = backend.numDataIds();
  for (let i = 0; i < 5; i++) {
    for (const strides of [[1, 1], [2, 2]] as [number, number][]) {
      const g = convGrads(
        { ...c, strides },
        rng.normal(strides[0] === 1 ? 2 * 9 * 8 * 5 : 2 * 5 * 4 * 5),
      );
      assert.ok(g.dx.length > 0);
    }
    assert.equal(tf.memory().numTensors, tensors);
    assert.equal(backend.numDataIds(), dataIds);
  }
  const again = convGrads(c, dy);
  assert.deepEqual(again.dx, first.dx);
  assert.deepEqual(again.dw, first.dw);
});

Deno.test("wasm conv2d gradients reject numeric pads tfjs gets wrong", async () => {
  await initBackend("wasm");
  const dy = tf.zeros([1, 4, 4, 1]);
  const filter = tf.zeros([3, 3, 1, 1]);
  assert.throws(
    () =>
      tf.engine().runKernel("Conv2DBackpropInput", { dy, filter }, {
        strides: [2, 1],
        pad: 1,
        dataFormat: "NHWC",
        inputShape: [1, 8, 8, 1],
      }),
    /numeric pad needs a square filter/,
  );
  tf.dispose([dy, filter]);
});
