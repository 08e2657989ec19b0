/**
 * The matmul and linear kernels against their references (odd sizes, every transpose, alpha,
 * accumulate, tiles crossing 64, split column sums), the references against tfjs and central
 * finite differences in float64, and bitwise repeatability.
 */
import assert from "node:assert/strict";
import {
  chooseTile,
  GEMM_TILES,
  linearBiasGrad,
  linearBiasGradRef,
  linearForward,
  linearForwardRef,
  linearInputGrad,
  linearInputGradRef,
  type LinearShape,
  linearWeightGrad,
  linearWeightGradRef,
  matmul,
  matmulRef,
  type MatmulShape,
} from "../../src/gpu/kernels/matmul.ts";
import { tf } from "../../src/tf.ts";
import { assertClose, device, noGpu, testData } from "./device.ts";
import { runPasses, sameBytes } from "./passes.ts";

await tf.setBackend("cpu");

const TRANSPOSES = [[false, false], [true, false], [false, true], [true, true]] as const;

function plus(a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  return Float64Array.from(a, (v, i) => v + b[i]);
}

function scale(a: ArrayLike<number>, k: number): Float64Array {
  return Float64Array.from(a, (v) => v * k);
}

Deno.test("matmulRef matches tf.matMul for every transpose (batched)", () => {
  for (const [transA, transB] of TRANSPOSES) {
    const s: MatmulShape = { batch: 3, m: 5, k: 7, n: 9, transA, transB };
    const a = testData(s.batch * s.m * s.k, 1);
    const b = testData(s.batch * s.k * s.n, 2);
    const want = tf.tidy(() =>
      tf.matMul(
        tf.tensor3d(a, transA ? [s.batch, s.k, s.m] : [s.batch, s.m, s.k]),
        tf.tensor3d(b, transB ? [s.batch, s.n, s.k] : [s.batch, s.k, s.n]),
        transA,
        transB,
      ).dataSync()
    );
    assertClose(matmulRef(a, b, s), want, 1e-5, `trans ${transA} ${transB}`);
    assertClose(matmulRef(a, b, { ...s, alpha: -0.5 }), scale(want, -0.5), 1e-5, "alpha");
  }
  const l: LinearShape = { rows: 3, cin: 13, cout: 70 };
  const x = testData(l.rows * l.cin, 3);
  const w = testData(l.cin * l.cout, 4);
  const bias = testData(l.cout, 5);
  const want = tf.tidy(() =>
    tf.add(tf.matMul(tf.tensor2d(x, [l.rows, l.cin]), tf.tensor2d(w, [l.cin, l.cout])), bias)
      .dataSync()
  );
  assertClose(linearForwardRef(x, w, bias, l), want, 1e-5, "linear");
});

Deno.test("linear gradient references match central finite differences (float64)", () => {
  const s: LinearShape = { rows: 3, cin: 4, cout: 5 };
  const x = Float64Array.from(testData(s.rows * s.cin, 6));
  const w = Float64Array.from(testData(s.cin * s.cout, 7));
  const b = Float64Array.from(testData(s.cout, 8));
  const g = Float64Array.from(testData(s.rows * s.cout, 9));
  const loss = (): number => linearForwardRef(x, w, b, s).reduce((acc, v, i) => acc + v * g[i], 0);
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
  assertClose(linearInputGradRef(g, w, s), fd(x), 1e-8, "dx");
  assertClose(linearWeightGradRef(x, g, s), fd(w), 1e-8, "dw");
  assertClose(linearBiasGradRef(g, s), fd(b), 1e-8, "db");
});

Deno.test("chooseTile takes 32x32 tiles for small products and 64x64 for large ones", () => {
  assert.deepEqual(chooseTile(32, 512), GEMM_TILES.small);
  assert.deepEqual(chooseTile(32768, 256), GEMM_TILES.medium);
  assert.throws(() =>
    matmul({ batch: 1, m: 8, k: 8, n: 8 }, { tile: { ...GEMM_TILES.small, tm: 3 } })
  );
});

Deno.test({
  name: "matmul matches its reference (every transpose, alpha, accumulate, tiles bitwise equal)",
  ignore: noGpu,
  fn: async () => {
    for (const [i, [transA, transB]] of TRANSPOSES.entries()) {
      const s: MatmulShape = { batch: 3, m: 5, k: 7, n: 9, transA, transB };
      const a = testData(s.batch * s.m * s.k, 11 + i);
      const b = testData(s.batch * s.k * s.n, 12 + i);
      const c0 = testData(s.batch * s.m * s.n, 13 + i);
      const accumulate = i % 2 === 1;
      const alpha = i < 2 ? 1 : 0.75;
      const { c } = await runPasses(device(), matmul(s, { alpha, accumulate }), { a, b, c: c0 });
      const ref = matmulRef(a, b, { ...s, alpha });
      assertClose(c, accumulate ? plus(ref, c0) : ref, 1e-5, `trans ${transA} ${transB}`);
    }
    // Over 64 in m and n and over several K slabs, on every tile.
    for (const [transA, transB] of [[false, false], [true, true]]) {
      const s: MatmulShape = { batch: 2, m: 70, k: 33, n: 65, transA, transB };
      const a = testData(s.batch * s.m * s.k, 21);
      const b = testData(s.batch * s.k * s.n, 22);
      const ref = matmulRef(a, b, s);
      let first: Float32Array | undefined;
      for (const tile of Object.values(GEMM_TILES)) {
        const { c } = await runPasses(device(), matmul(s, { tile }), { a, b });
        assertClose(c, ref, 1e-5, `tile ${tile.bm}`);
        first ??= c;
        assert.ok(sameBytes(c, first), `tile ${tile.bm} differs from ${GEMM_TILES.small.bm}`);
      }
    }
  },
});

Deno.test({
  name: "linear kernels match their references (bias on/off, accumulate on/off, 64 tile)",
  ignore: noGpu,
  fn: async () => {
    const shapes: LinearShape[] = [{ rows: 3, cin: 13, cout: 70 }, { rows: 70, cin: 65, cout: 5 }];
    for (const [i, s] of shapes.entries()) {
      const x = testData(s.rows * s.cin, 31 + i);
      const w = testData(s.cin * s.cout, 32 + i);
      const b = testData(s.cout, 33 + i);
      const dy = testData(s.rows * s.cout, 34 + i);
      const dx0 = testData(s.rows * s.cin, 35 + i);
      const dw0 = testData(s.cin * s.cout, 36 + i);
      const db0 = testData(s.cout, 37 + i);
      const tile = i === 1 ? GEMM_TILES.medium : undefined;
      for (const bias of [true, false]) {
        const { y } = await runPasses(device(), linearForward(s, { bias, tile }), { x, w, b });
        assertClose(y, linearForwardRef(x, w, bias ? b : undefined, s), 1e-5, `forward ${i}`);
      }
      for (const accumulate of [false, true]) {
        const { dx } = await runPasses(device(), linearInputGrad(s, { accumulate, tile }), {
          dy,
          w,
          dx: dx0,
        });
        const rx = linearInputGradRef(dy, w, s);
        assertClose(dx, accumulate ? plus(rx, dx0) : rx, 1e-5, `dx ${i}`);
        const { dw } = await runPasses(device(), linearWeightGrad(s, { accumulate, tile }), {
          x,
          dy,
          dw: dw0,
        });
        const rw = linearWeightGradRef(x, dy, s);
        assertClose(dw, accumulate ? plus(rw, dw0) : rw, 1e-5, `dw ${i}`);
        const specs = linearBiasGrad(s, { accumulate, chunks: accumulate ? 3 : undefined });
        assert.equal(Array.isArray(specs), accumulate);
        const { db } = await runPasses(device(), specs, { dy, db: db0 });
        const rb = linearBiasGradRef(dy, s);
        assertClose(db, accumulate ? plus(rb, db0) : rb, 1e-5, `db ${i}`);
      }
    }
  },
});

Deno.test({
  name: "matmul and linear kernels give the same bytes twice",
  ignore: noGpu,
  fn: async () => {
    const s: LinearShape = { rows: 70, cin: 33, cout: 65 };
    const inputs = {
      x: testData(s.rows * s.cin, 41),
      w: testData(s.cin * s.cout, 42),
      b: testData(s.cout, 43),
      dy: testData(s.rows * s.cout, 44),
    };
    for (
      const specs of [linearForward(s), linearWeightGrad(s), linearBiasGrad(s, { chunks: 4 })]
    ) {
      const first = await runPasses(device(), specs, inputs);
      const second = await runPasses(device(), specs, inputs);
      for (const name of Object.keys(first)) {
        assert.ok(sameBytes(first[name], second[name]), `${name} differs between runs`);
      }
    }
  },
});
