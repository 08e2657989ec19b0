/**
 * The conv kernels against their references (odd sizes, 1x1 and 3x3, a 64-tile crossing, bias,
 * accumulate, split reductions), the forward reference against tfjs, the gradient references
 * against central finite differences in float64, and bitwise repeatability.
 */
import assert from "node:assert/strict";
import {
  convBiasGrad,
  convBiasGradRef,
  convForward,
  convForwardRef,
  convInputGrad,
  convInputGradRef,
  type ConvShape,
  convWeightGrad,
  convWeightGradChunks,
  convWeightGradRef,
} from "../../src/gpu/kernels/conv.ts";
import { GEMM_TILES } from "../../src/gpu/kernels/matmul.ts";
import { tf } from "../../src/tf.ts";
import { assertClose, device, noGpu, testData } from "./device.ts";
import { runPasses, sameBytes } from "./passes.ts";

await tf.setBackend("cpu");

const CASES: ConvShape[] = [
  { batch: 3, height: 5, width: 7, cin: 3, cout: 5, k: 3 },
  { batch: 3, height: 5, width: 7, cin: 3, cout: 5, k: 1 },
  // 70 pixels, 70 outputs, K = 117: crosses 64-wide tiles and 16-wide K slabs.
  { batch: 2, height: 5, width: 7, cin: 13, cout: 70, k: 3 },
  { batch: 1, height: 9, width: 9, cin: 70, cout: 13, k: 1 },
];

function sizes(s: ConvShape): { x: number; w: number; y: number } {
  const p = s.batch * s.height * s.width;
  return { x: p * s.cin, w: s.k * s.k * s.cin * s.cout, y: p * s.cout };
}

function plus(a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  return Float64Array.from(a, (v, i) => v + b[i]);
}

function label(s: ConvShape): string {
  return `${s.k}x${s.k} b${s.batch} ${s.height}x${s.width} ${s.cin}->${s.cout}`;
}

Deno.test("convForwardRef matches tf.conv2d 'same' (with and without bias)", () => {
  for (const [i, s] of CASES.entries()) {
    const n = sizes(s);
    const x = testData(n.x, 1 + i);
    const w = testData(n.w, 2 + i);
    const b = testData(s.cout, 3 + i);
    const got = tf.tidy(() => {
      const y = tf.conv2d(
        tf.tensor4d(x, [s.batch, s.height, s.width, s.cin]),
        tf.tensor4d(w, [s.k, s.k, s.cin, s.cout]),
        1,
        "same",
      );
      return [y.dataSync(), tf.add(y, tf.tensor1d(b)).dataSync()];
    });
    assertClose(convForwardRef(x, w, undefined, s), got[0], 1e-5, label(s));
    assertClose(convForwardRef(x, w, b, s), got[1], 1e-5, label(s));
  }
});

Deno.test("conv gradient references match central finite differences (float64)", () => {
  for (const k of [1, 3] as const) {
    const s: ConvShape = { batch: 2, height: 3, width: 4, cin: 2, cout: 3, k };
    const n = sizes(s);
    const x = Float64Array.from(testData(n.x, 5));
    const w = Float64Array.from(testData(n.w, 6));
    const b = Float64Array.from(testData(s.cout, 7));
    const g = Float64Array.from(testData(n.y, 8));
    const loss = (): number => {
      const y = convForwardRef(x, w, b, s);
      return y.reduce((acc, v, i) => acc + v * g[i], 0);
    };
    const fd = (v: Float64Array): Float64Array =>
      Float64Array.from(v, (orig, i) => {
        const h = 1e-4;
        v[i] = orig + h;
        const up = loss();
        v[i] = orig - h;
        const down = loss();
        v[i] = orig;
        return (up - down) / (2 * h);
      });
    assertClose(convInputGradRef(g, w, s), fd(x), 1e-8, `dx ${k}x${k}`);
    assertClose(convWeightGradRef(x, g, s), fd(w), 1e-8, `dw ${k}x${k}`);
    assertClose(convBiasGradRef(g, s), fd(b), 1e-8, `db ${k}x${k}`);
  }
});

Deno.test({
  name: "convForward matches its reference (odd sizes, bias on/off, tiles agree bitwise)",
  ignore: noGpu,
  fn: async () => {
    for (const [i, s] of CASES.entries()) {
      const n = sizes(s);
      const x = testData(n.x, 11 + i);
      const w = testData(n.w, 12 + i);
      const b = testData(s.cout, 13 + i);
      for (const bias of [i % 2 === 0, i % 2 === 1]) {
        const { y } = await runPasses(device(), convForward(s, { bias }), { x, w, b });
        assertClose(y, convForwardRef(x, w, bias ? b : undefined, s), 1e-5, label(s));
        if (i === 2 && bias) {
          for (const tile of [GEMM_TILES.medium, GEMM_TILES.large]) {
            const other = await runPasses(device(), convForward(s, { bias, tile }), { x, w, b });
            assert.ok(sameBytes(other.y, y), `tile ${tile.bm} differs`);
          }
        }
      }
    }
  },
});

Deno.test({
  name: "convInputGrad matches its reference (accumulate on/off, 64 tile)",
  ignore: noGpu,
  fn: async () => {
    for (const [i, s] of CASES.entries()) {
      const n = sizes(s);
      const dy = testData(n.y, 21 + i);
      const w = testData(n.w, 22 + i);
      const dx0 = testData(n.x, 23 + i);
      const accumulate = i % 2 === 1;
      const tile = i === 2 ? GEMM_TILES.medium : undefined;
      const { dx } = await runPasses(device(), convInputGrad(s, { accumulate, tile }), {
        dy,
        w,
        dx: dx0,
      });
      const ref = convInputGradRef(dy, w, s);
      assertClose(dx, accumulate ? plus(ref, dx0) : ref, 1e-5, label(s));
    }
  },
});

Deno.test({
  name: "convWeightGrad matches its reference (one pass and split through tmp)",
  ignore: noGpu,
  fn: async () => {
    for (const [i, s] of CASES.entries()) {
      const n = sizes(s);
      const x = testData(n.x, 31 + i);
      const dy = testData(n.y, 32 + i);
      const dw0 = testData(n.w, 33 + i);
      const ref = convWeightGradRef(x, dy, s);
      for (const chunks of [1, 3]) {
        const accumulate = (i + chunks) % 2 === 0;
        const specs = convWeightGrad(s, { accumulate, chunks });
        assert.equal(Array.isArray(specs), chunks > 1);
        if (Array.isArray(specs)) {
          assert.equal(specs[0].bindings[2].name, "tmp");
          assert.equal(specs[0].bindings[2].length, 3 * n.w);
        }
        const { dw } = await runPasses(device(), specs, { x, dy, dw: dw0 });
        assertClose(dw, accumulate ? plus(ref, dw0) : ref, 1e-5, `${label(s)} chunks ${chunks}`);
      }
    }
    // The default split: 1152 pixels and a one-tile output give two chunks.
    const s: ConvShape = { batch: 2, height: 24, width: 24, cin: 3, cout: 5, k: 3 };
    assert.equal(convWeightGradChunks(s), 2);
    const n = sizes(s);
    const x = testData(n.x, 41);
    const dy = testData(n.y, 42);
    const { dw } = await runPasses(device(), convWeightGrad(s), { x, dy });
    assertClose(dw, convWeightGradRef(x, dy, s), 1e-5, "default split");
  },
});

Deno.test({
  name: "convBiasGrad matches its reference (one pass, forced and default chunks)",
  ignore: noGpu,
  fn: async () => {
    const big: ConvShape = { batch: 2, height: 32, width: 33, cin: 1, cout: 70, k: 1 };
    for (const [i, s] of [...CASES, big].entries()) {
      const n = sizes(s);
      const dy = testData(n.y, 51 + i);
      const db0 = testData(s.cout, 52 + i);
      const ref = convBiasGradRef(dy, s);
      for (const chunks of s === big ? [undefined] : [1, 4]) {
        const accumulate = i % 2 === 0;
        const specs = convBiasGrad(s, { accumulate, chunks });
        if (s === big) assert.ok(Array.isArray(specs) && specs.length === 2);
        const { db } = await runPasses(device(), specs, { dy, db: db0 });
        assertClose(db, accumulate ? plus(ref, db0) : ref, 1e-5, `${label(s)} chunks ${chunks}`);
      }
    }
  },
});

Deno.test({
  name: "conv kernels give the same bytes twice",
  ignore: noGpu,
  fn: async () => {
    const s = CASES[2];
    const n = sizes(s);
    const inputs = {
      x: testData(n.x, 61),
      w: testData(n.w, 62),
      b: testData(s.cout, 63),
      dy: testData(n.y, 64),
    };
    for (
      const specs of [
        convForward(s, { bias: true }),
        convInputGrad(s),
        convWeightGrad(s, { chunks: 2 }),
        convBiasGrad(s, { chunks: 3 }),
      ]
    ) {
      const first = await runPasses(device(), specs, inputs);
      const second = await runPasses(device(), specs, inputs);
      for (const name of Object.keys(first)) {
        assert.ok(sameBytes(first[name], second[name]), `${name} differs between runs`);
      }
    }
  },
});
