/**
 * The elementwise kernel family: each kernel against its reference on the adapter (odd tiny
 * sizes, accumulate on and off), the forward references against the tfjs layers, the backward
 * references against central finite differences in float64.
 */
import assert from "node:assert/strict";
import type { KernelSpec } from "../../src/gpu/kernel.ts";
import * as K from "../../src/gpu/kernels/elementwise.ts";
import { type KernelData, runKernel } from "../../src/gpu/testing.ts";
import {
  dropoutMask,
  gelu,
  pixelUnshuffle,
  silu,
  sinusoidalEmbedding,
  upsampleNearest2x,
} from "../../src/model/layers.ts";
import { Rng } from "../../src/rng.ts";
import { tf } from "../../src/tf.ts";
import { assertClose, device, noGpu, testData } from "./device.ts";
import { type Arrays, f64, numericGradient } from "./finite_differences.ts";

await tf.setBackend("cpu");

const TOL = 1e-5;

/** `data` scaled by `k` (test data in [-k, k)). */
function scaled(n: number, seed: number, k: number): Float32Array<ArrayBuffer> {
  return testData(n, seed).map((v) => v * k);
}

function tfValues(t: tf.Tensor): Float32Array {
  const v = t.dataSync() as Float32Array;
  t.dispose();
  return v;
}

/**
 * Runs `spec` twice (outputs starting at zero, then at `prev` with `accumulate`) and checks the
 * outputs against `expected` (plus `prev` when accumulating).
 */
async function check(
  build: (accumulate: boolean) => KernelSpec,
  inputs: KernelData,
  expected: Record<string, ArrayLike<number>>,
  options: { accumulate?: boolean; tolerance?: number } = {},
): Promise<void> {
  const tolerance = options.tolerance ?? TOL;
  const modes = options.accumulate ? [false, true] : [false];
  for (const accumulate of modes) {
    const spec = build(accumulate);
    const prev: KernelData = {};
    if (accumulate) {
      for (const [k, v] of Object.entries(expected)) prev[k] = testData(v.length, 99);
    }
    const out = await runKernel(device(), spec, { ...inputs, ...prev });
    for (const [k, v] of Object.entries(expected)) {
      const want = accumulate ? Array.from(v, (x, i) => x + prev[k][i]) : v;
      assertClose(out[k], want, tolerance, `${spec.name} ${k}${accumulate ? " (+=)" : ""}`);
    }
  }
}

/** Asserts the backward reference equals central differences of the forward reference. */
function checkGradient(
  forward: (inputs: Arrays) => Arrays,
  inputs: Arrays,
  options: { seeds: Arrays; grads: Record<string, ArrayLike<number>> },
): void {
  for (const [wrt, analytic] of Object.entries(options.grads)) {
    const numeric = numericGradient(forward, inputs, { seeds: options.seeds, wrt });
    assertClose(analytic, numeric, 1e-7, `d/d${wrt}`);
  }
}

Deno.test("erf: the float64 reference to 1e-15 and the WGSL float32 one to ~2e-7", async (t) => {
  const known: [number, number][] = [
    [0.1, 0.1124629160182849],
    [0.5, 0.5204998778130465],
    [1, 0.8427007929497149],
    [2, 0.9953222650189527],
    [2.9, 0.9999589021219005],
    [3, 0.9999779095030014],
    [4, 0.9999999845827421],
  ];
  for (const [x, v] of known) {
    assert.ok(Math.abs(K.erf(x) - v) < 1e-15, `erf(${x}) = ${K.erf(x)}`);
    assert.ok(Math.abs(K.erf(-x) + v) < 1e-15);
  }
  // erfc(5) = 1.5374597944280349e-12 through the continued fraction.
  assert.ok(Math.abs((1 - K.erf(5)) / 1.5374597944280349e-12 - 1) < 1e-3);
  await t.step({
    name: "WGSL erf_f32 on [-6, 6] and near 0",
    ignore: noGpu,
    fn: async () => {
      const grid = Float32Array.from({ length: 2401 }, (_, i) => -6 + i * 0.005);
      const tiny = Float32Array.from([1e-30, -3e-8, 1e-5, 0.01, -0.999, 1, 1.0001]);
      const x = new Float32Array([...grid, ...tiny]);
      const spec = K.pointwiseKernel("test.erf", {
        n: x.length,
        bindings: [K.input("x", x.length), K.output("y", x.length)],
        prelude: K.ERF_WGSL,
        body: "y[i] = erf_f32(x[i]);",
      });
      const { y } = await runKernel(device(), spec, { x });
      let abs = 0;
      let rel = 0;
      for (let i = 0; i < x.length; i++) {
        const e = K.erf(x[i]);
        abs = Math.max(abs, Math.abs(y[i] - e));
        if (e !== 0) rel = Math.max(rel, Math.abs(y[i] - e) / Math.abs(e));
      }
      assert.ok(abs < 5e-7, `absolute error ${abs}`);
      assert.ok(rel < 1e-6, `relative error ${rel}`);
    },
  });
});

Deno.test("silu and gelu: references vs tfjs and finite differences", () => {
  const x = scaled(41, 2, 6);
  const dy = f64(testData(41, 3));
  assertClose(K.siluForwardRef({ x }).y, tfValues(silu(tf.tensor1d(x))), TOL, "silu");
  assertClose(K.geluForwardRef({ x }).y, tfValues(gelu(tf.tensor1d(x))), TOL, "gelu");
  const xs = f64(x);
  checkGradient((i) => K.siluForwardRef({ x: i.x }), { x: xs }, {
    seeds: { y: dy },
    grads: { x: K.siluBackwardRef({ dy, x: xs }).dx },
  });
  checkGradient((i) => K.geluForwardRef({ x: i.x }), { x: xs }, {
    seeds: { y: dy },
    grads: { x: K.geluBackwardRef({ dy, x: xs }).dx },
  });
  // Far tails stay finite (no exp overflow in the sigmoid).
  assert.equal(K.siluForwardRef({ x: [-1000] }).y[0], -0);
});

Deno.test({
  name: "silu and gelu kernels match their references, accumulate on and off",
  ignore: noGpu,
  fn: async () => {
    const n = 301;
    const x = new Float32Array([...scaled(n - 4, 4, 8), -120, 120, 0, 1e-6]);
    const dy = testData(n, 5);
    await check(() => K.siluForward(n), { x }, K.siluForwardRef({ x }));
    await check(
      (a) => K.siluBackward(n, { accumulate: a }),
      { dy, x },
      K.siluBackwardRef({ dy, x }),
      {
        accumulate: true,
      },
    );
    await check(() => K.geluForward(n), { x }, K.geluForwardRef({ x }));
    await check(
      (a) => K.geluBackward(n, { accumulate: a }),
      { dy, x },
      K.geluBackwardRef({ dy, x }),
      {
        accumulate: true,
      },
    );
  },
});

Deno.test({
  name: "add and copy (scale, accumulate)",
  ignore: noGpu,
  fn: async () => {
    const n = 257;
    const a = testData(n, 6);
    const b = testData(n, 7);
    await check(() => K.add(n), { a, b }, K.addRef({ a, b }));
    await check((acc) => K.copy(n, { accumulate: acc }), { src: a }, K.copyRef({ src: a }), {
      accumulate: true,
    });
    await check(
      (acc) => K.copy(n, { accumulate: acc, scale: -0.3 }),
      { src: a },
      K.copyRef({ src: a }, { scale: -0.3 }),
      { accumulate: true },
    );
    // Without accumulate a plain copy is exact.
    const { dst } = await runKernel(device(), K.copy(n), { src: a, dst: b });
    assert.deepEqual(dst, a);
  },
});

Deno.test("scale-shift: reference vs the ResBlock's tfjs ops and finite differences", () => {
  const shape = { batch: 3, pixels: 35, channels: 5 };
  const { batch, pixels, channels: c } = shape;
  const h = testData(batch * pixels * c, 8);
  const ss = testData(batch * 2 * c, 9);
  const want = tf.tidy(() => {
    const hh = tf.tensor4d(h, [batch, 5, 7, c]);
    const [scale, shift] = tf.split(
      tf.reshape(tf.tensor2d(ss, [batch, 2 * c]), [-1, 1, 1, 2 * c]),
      2,
      3,
    );
    return tf.add(tf.mul(hh, tf.add(scale, 1)), shift);
  });
  assertClose(K.scaleShiftForwardRef({ h, ss }, shape).y, tfValues(want), TOL, "scaleShift");
  const inputs = { h: f64(h), ss: f64(ss) };
  const dy = f64(testData(h.length, 10));
  const grads = K.scaleShiftBackwardRef({ dy, ...inputs }, shape);
  checkGradient((i) => K.scaleShiftForwardRef({ h: i.h, ss: i.ss }, shape), inputs, {
    seeds: { y: dy },
    grads: { h: grads.dh, ss: grads.dss },
  });
});

Deno.test({
  name: "scale-shift kernels: forward, and backward over 1 and 2 channel tiles",
  ignore: noGpu,
  fn: async () => {
    for (
      const shape of [{ batch: 3, pixels: 35, channels: 3 }, { batch: 2, pixels: 35, channels: 37 }]
    ) {
      const { batch, pixels, channels: c } = shape;
      const n = batch * pixels * c;
      const h = testData(n, 11);
      const ss = testData(batch * 2 * c, 12);
      const dy = testData(n, 13);
      await check(
        () => K.scaleShiftForward(shape),
        { h, ss },
        K.scaleShiftForwardRef({ h, ss }, shape),
      );
      await check(
        (a) => K.scaleShiftBackward(shape, { accumulate: a }),
        { dy, h, ss },
        K.scaleShiftBackwardRef({ dy, h, ss }, shape),
        { accumulate: true },
      );
    }
  },
});

Deno.test("concat and split: reference vs tf.concat and finite differences", () => {
  const shape = { batch: 3, pixels: 7, ca: 3, cb: 5 };
  const rows = shape.batch * shape.pixels;
  const a = testData(rows * 3, 14);
  const b = testData(rows * 5, 15);
  const want = tf.tidy(() => tf.concat([tf.tensor2d(a, [rows, 3]), tf.tensor2d(b, [rows, 5])], 1));
  assertClose(K.concatChannelsRef({ a, b }, shape).y, tfValues(want), 0, "concat");
  const dy = f64(testData(rows * 8, 16));
  const grads = K.splitChannelsRef({ dy }, shape);
  checkGradient((i) => K.concatChannelsRef({ a: i.a, b: i.b }, shape), { a: f64(a), b: f64(b) }, {
    seeds: { y: dy },
    grads: { a: grads.da, b: grads.db },
  });
});

Deno.test({
  name: "concat and split kernels",
  ignore: noGpu,
  fn: async () => {
    const shape = { batch: 3, pixels: 35, ca: 5, cb: 3 };
    const rows = shape.batch * shape.pixels;
    const a = testData(rows * 5, 17);
    const b = testData(rows * 3, 18);
    const dy = testData(rows * 8, 19);
    await check(() => K.concatChannels(shape), { a, b }, K.concatChannelsRef({ a, b }, shape), {
      tolerance: 0,
    });
    await check(
      (acc) => K.splitChannels(shape, { accumulate: acc }),
      { dy },
      K.splitChannelsRef({ dy }, shape),
      {
        accumulate: true,
      },
    );
  },
});

const IMAGE = { batch: 3, height: 6, width: 10, channels: 3 };
const IMAGE_SIZE = 3 * 6 * 10 * 3;

Deno.test("pixel-unshuffle and upsample: references vs layers.ts and finite differences", () => {
  const { batch, height, width, channels } = IMAGE;
  const x = testData(IMAGE_SIZE, 20);
  const x4 = () => tf.tensor4d(x, [batch, height, width, channels]);
  assertClose(
    K.pixelUnshuffleForwardRef({ x }, IMAGE).y,
    tfValues(tf.tidy(() => pixelUnshuffle(x4()))),
    0,
    "pixelUnshuffle",
  );
  assertClose(
    K.upsampleForwardRef({ x }, IMAGE).y,
    tfValues(tf.tidy(() => upsampleNearest2x(x4()))),
    0,
    "upsample",
  );
  const dy = f64(testData(IMAGE_SIZE, 21));
  checkGradient((i) => K.pixelUnshuffleForwardRef({ x: i.x }, IMAGE), { x: f64(x) }, {
    seeds: { y: dy },
    grads: { x: K.pixelUnshuffleBackwardRef({ dy }, IMAGE).dx },
  });
  const dy4 = f64(testData(4 * IMAGE_SIZE, 22));
  checkGradient((i) => K.upsampleForwardRef({ x: i.x }, IMAGE), { x: f64(x) }, {
    seeds: { y: dy4 },
    grads: { x: K.upsampleBackwardRef({ dy: dy4 }, IMAGE).dx },
  });
  assert.throws(() => K.pixelUnshuffleForward({ ...IMAGE, width: 7 }), RangeError);
});

Deno.test({
  name: "pixel-unshuffle and upsample kernels",
  ignore: noGpu,
  fn: async () => {
    const x = testData(IMAGE_SIZE, 23);
    const dy = testData(IMAGE_SIZE, 24);
    const dy4 = testData(4 * IMAGE_SIZE, 25);
    const small = { batch: 3, height: 5, width: 7, channels: 3 };
    const xs = testData(3 * 5 * 7 * 3, 26);
    await check(
      () => K.pixelUnshuffleForward(IMAGE),
      { x },
      K.pixelUnshuffleForwardRef({ x }, IMAGE),
      {
        tolerance: 0,
      },
    );
    await check(
      (a) => K.pixelUnshuffleBackward(IMAGE, { accumulate: a }),
      { dy },
      K.pixelUnshuffleBackwardRef({ dy }, IMAGE),
      { accumulate: true },
    );
    await check(() => K.upsampleForward(small), { x: xs }, K.upsampleForwardRef({ x: xs }, small), {
      tolerance: 0,
    });
    const dys = dy4.subarray(0, 4 * xs.length);
    await check(
      (a) => K.upsampleBackward(small, { accumulate: a }),
      { dy: dys },
      K.upsampleBackwardRef({ dy: dys }, small),
      { accumulate: true },
    );
  },
});

Deno.test({
  name: "time embedding: reference vs layers.ts, kernel to 2e-6 up to t = 4000",
  ignore: noGpu,
  fn: async () => {
    const shape = { batch: 7, dim: 18 };
    const t = Float32Array.from([0, 1, 7, 123, 500, 999, 3999]);
    const want = tfValues(tf.tidy(() => sinusoidalEmbedding(tf.tensor1d(t), shape.dim)));
    const ref = K.timeEmbeddingRef({ t }, shape);
    assertClose(ref.y, want, 1e-7, "reference vs tfjs");
    await check(() => K.timeEmbedding(shape), { t }, { y: ref.y }, { tolerance: 2e-6 });
  },
});

Deno.test({
  name: "dropout by a host mask (layers.ts dropoutMask)",
  ignore: noGpu,
  fn: async () => {
    const n = 263;
    const mask = tfValues(
      dropoutMask([n], { rate: 0.3, rng: new Rng([1, 2, 3, 4]) }),
    ) as Float32Array<
      ArrayBuffer
    >;
    assert.ok(mask.includes(0) && mask.some((v) => v > 1));
    const x = testData(n, 27);
    const dy = testData(n, 28);
    await check(() => K.dropoutForward(n), { x, mask }, K.dropoutForwardRef({ x, mask }));
    await check(
      (a) => K.dropoutBackward(n, { accumulate: a }),
      { dy, mask },
      K.dropoutBackwardRef({ dy, mask }),
      { accumulate: true },
    );
    const want = tfValues(tf.mul(tf.tensor1d(x), tf.tensor1d(mask)));
    assertClose(K.dropoutForwardRef({ x, mask }).y, want, 1e-7, "dropout vs tfjs");
  },
});

Deno.test("null mix: reference vs conditioning.ts Tau's ops and finite differences", () => {
  const shape = { batch: 5, width: 7 };
  const h = testData(35, 29);
  const nul = testData(7, 30);
  const drop = Float32Array.from([0, 1, 1, 0, 1]);
  const want = tf.tidy(() => {
    const m = tf.tensor2d(drop, [5, 1]);
    const nullEmb = tf.tensor2d(nul, [1, 7]);
    return tf.add(tf.mul(tf.tensor2d(h, [5, 7]), tf.sub(1, m)), tf.mul(nullEmb, m));
  });
  assertClose(K.nullMixForwardRef({ h, nul, drop }).y, tfValues(want), 0, "nullMix");
  const dy = f64(testData(35, 31));
  const grads = K.nullMixBackwardRef({ dy, drop }, shape);
  checkGradient((i) => K.nullMixForwardRef({ h: i.h, nul: i.nul, drop }), {
    h: f64(h),
    nul: f64(nul),
  }, {
    seeds: { y: dy },
    grads: { h: grads.dh, nul: grads.dnul },
  });
});

Deno.test({
  name: "null mix kernels",
  ignore: noGpu,
  fn: async () => {
    const shape = { batch: 5, width: 259 };
    const n = 5 * 259;
    const h = testData(n, 32);
    const nul = testData(259, 33);
    const drop = Float32Array.from([1, 0, 1, 1, 0]);
    const dy = testData(n, 34);
    await check(
      () => K.nullMixForward(shape),
      { h, nul, drop },
      K.nullMixForwardRef({ h, nul, drop }),
      {
        tolerance: 0,
      },
    );
    await check(
      (a) => K.nullMixBackward(shape, { accumulate: a }),
      { dy, drop },
      K.nullMixBackwardRef({ dy, drop }, shape),
      { accumulate: true },
    );
  },
});

Deno.test({
  name: "the pointwise skeleton folds past 65535 workgroups and covers every element once",
  ignore: noGpu,
  fn: async () => {
    const n = 70_001;
    const spec = K.pointwiseKernel("test.fold", {
      n,
      bindings: [K.input("src", n), K.output("dst", n)],
      body: "dst[i] = dst[i] + src[i] + 1.0;",
      workgroupSize: 1,
    });
    assert.ok(spec.workgroups[1] > 1 && spec.workgroups[0] <= 65535);
    const src = testData(n, 35);
    const { dst } = await runKernel(device(), spec, { src });
    assert.deepEqual(dst, src.map((v) => v + 1));
  },
});

Deno.test("builders reject shapes they cannot bake", () => {
  assert.throws(() => K.siluForward(0), RangeError);
  assert.throws(() => K.timeEmbedding({ batch: 2, dim: 7 }), RangeError);
  assert.throws(() => K.scaleShiftForward({ batch: 2, pixels: 1.5, channels: 3 }), RangeError);
});
