/**
 * The wasm kernels of `src/backend/wasm_kernels.ts` (conv2d gradients, BatchMatMul, Identity)
 * against the cpu backend.
 * @module
 */
import assert from "node:assert/strict";
import { tf } from "../src/tf.ts";
import { initBackend } from "../src/backend/mod.ts";
import { registerWasmKernels } from "../src/backend/wasm_kernels.ts";
import { deriveRng, type Rng } from "../src/rng.ts";
import { conv, groupNorm, linearAttention } from "../src/model/layers.ts";

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

/**
 * Runs `run` for every case on the cpu backend, then on wasm with the same input values (drawn
 * on the first run), and checks every output to `tolerance` relative to its scale.
 */
async function matchesCpu<C>(
  cases: C[],
  run: (c: C, values: Map<string, Float32Array>) => Map<string, Float32Array>,
  tolerance: number,
): Promise<void> {
  const values = cases.map(() => new Map<string, Float32Array>());
  await initBackend("cpu");
  const expected = cases.map((c, i) => run(c, values[i]));
  await initBackend("wasm");
  for (const [i, c] of cases.entries()) {
    const got = run(c, values[i]);
    for (const [key, ref] of expected[i]) {
      const { diff, scale } = maxAbsDiff(got.get(key)!, ref);
      assert.ok(
        diff <= tolerance * (1 + scale),
        `${key} of ${JSON.stringify(c)}: max diff ${diff}`,
      );
    }
  }
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

interface MatMulCase {
  a: number[];
  b: number[];
  transposeA: boolean;
  transposeB: boolean;
}

/** Batched, transposed and broadcast products, with outer dims of rank 0 to 2. */
function matMulCases(): MatMulCase[] {
  const rng = deriveRng(4, "tests/wasm_kernels/matmul");
  const cases: MatMulCase[] = [];
  const outers: [number[], number[]][] = [
    [[], []],
    [[1], [1]],
    [[5], [5]],
    [[5], [1]],
    [[1], [5]],
    [[2, 3], [2, 3]],
    [[2, 3], [1]],
    [[1], [2, 3]],
    [[2, 3], []],
    [[], [3]],
  ];
  for (const [outerA, outerB] of outers) {
    for (const transposeA of [false, true]) {
      for (const transposeB of [false, true]) {
        const m = 1 + rng.int(9);
        const k = 1 + rng.int(40);
        const n = 1 + rng.int(9);
        cases.push({
          a: [...outerA, ...(transposeA ? [k, m] : [m, k])],
          b: [...outerB, ...(transposeB ? [n, k] : [k, n])],
          transposeA,
          transposeB,
        });
      }
    }
  }
  // The shapes of the U-Net's attention products (batch x heads, tokens, head width).
  cases.push({ a: [8, 32, 64], b: [8, 64, 32], transposeA: false, transposeB: false });
  cases.push({ a: [8, 64, 32], b: [8, 64, 32], transposeA: true, transposeB: false });
  cases.push({ a: [8, 32, 32], b: [8, 64, 32], transposeA: false, transposeB: true });
  return cases;
}

function matMulValues(c: MatMulCase): { a: Float32Array; b: Float32Array } {
  const rng = deriveRng(5, `tests/wasm_kernels/matmul/${c.a}/${c.b}/${c.transposeA}`);
  const size = (s: number[]) => s.reduce((x, y) => x * y, 1);
  return { a: rng.normal(size(c.a)), b: rng.normal(size(c.b)) };
}

function matMulOn(c: MatMulCase): { shape: number[]; values: Float32Array } {
  const { a, b } = matMulValues(c);
  return tf.tidy(() => {
    const y = tf.matMul(tf.tensor(a, c.a), tf.tensor(b, c.b), c.transposeA, c.transposeB);
    return { shape: y.shape, values: y.dataSync() as Float32Array };
  });
}

Deno.test("wasm BatchMatMul override matches the cpu backend", async () => {
  const cases = matMulCases();
  await initBackend("cpu");
  const expected = cases.map(matMulOn);
  await initBackend("wasm");
  for (const [i, c] of cases.entries()) {
    const got = matMulOn(c);
    const label = `a ${c.a} b ${c.b} transposeA ${c.transposeA} transposeB ${c.transposeB}`;
    assert.deepEqual(got.shape, expected[i].shape, label);
    const { diff, scale } = maxAbsDiff(got.values, expected[i].values);
    assert.ok(diff <= 1e-5 * (1 + scale), `${label}: max diff ${diff}, scale ${scale}`);
  }
});

Deno.test("wasm BatchMatMul override leaks nothing and gives the same bits on rerun", async () => {
  await initBackend("wasm");
  const backend = tf.backend() as unknown as { numDataIds(): number };
  const c: MatMulCase = { a: [6, 7, 9], b: [6, 5, 9], transposeA: false, transposeB: true };
  const first = matMulOn(c);
  const tensors = tf.memory().numTensors;
  const dataIds = backend.numDataIds();
  for (const d of matMulCases()) matMulOn(d);
  assert.equal(tf.memory().numTensors, tensors);
  assert.equal(backend.numDataIds(), dataIds);
  assert.deepEqual(matMulOn(c).values, first.values);
});

Deno.test("wasm BatchMatMul gradients match the cpu backend", async () => {
  const c: MatMulCase = { a: [3, 4, 10, 6], b: [3, 4, 6, 7], transposeA: false, transposeB: false };
  const { a, b } = matMulValues(c);
  const grads = () =>
    tf.tidy(() => {
      const f = (x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.square(tf.matMul(x, y)));
      const [da, db] = tf.grads(f)([tf.tensor(a, c.a), tf.tensor(b, c.b)]);
      return [da.dataSync() as Float32Array, db.dataSync() as Float32Array];
    });
  await initBackend("cpu");
  const expected = grads();
  await initBackend("wasm");
  const got = grads();
  for (const i of [0, 1]) {
    const { diff, scale } = maxAbsDiff(got[i], expected[i]);
    assert.ok(diff <= 1e-5 * (1 + scale), `gradient ${i}: max diff ${diff}, scale ${scale}`);
  }
});

Deno.test("wasm 1x1 filter gradients of wide and narrow convolutions match the cpu backend", async () => {
  const rng = deriveRng(6, "tests/wasm_kernels/pointwise");
  const cases: Case[] = [[3, 40], [40, 3], [17, 17], [64, 130]].map(([cin, cout]) => ({
    x: [2, 5, 7, cin],
    filter: [1, 1, cin, cout],
    strides: [1, 1],
    pad: "same",
    xValues: rng.normal(2 * 5 * 7 * cin),
    filterValues: rng.normal(cin * cout),
  }));
  await initBackend("cpu");
  const expected = cases.map((c) => convGrads(c, undefined));
  await initBackend("wasm");
  for (const [i, c] of cases.entries()) {
    const got = convGrads(c, undefined);
    for (const key of ["dx", "dw"] as const) {
      const { diff, scale } = maxAbsDiff(got[key], expected[i][key]);
      assert.ok(diff <= 1e-4 * (1 + scale), `${key} of filter ${c.filter}: max diff ${diff}`);
    }
  }
});

Deno.test("wasm Identity shares data: saved tensors cost no copy and survive their source", async () => {
  await initBackend("wasm");
  const backend = tf.backend() as unknown as { numDataIds(): number };
  const x = tf.tensor([1, 2, 3, 4], [2, 2]);
  const dataIds = backend.numDataIds();
  const y = tf.clone(x);
  assert.equal(backend.numDataIds(), dataIds, "clone made no new buffer");
  x.dispose();
  assert.deepEqual(Array.from(y.dataSync()), [1, 2, 3, 4]);
  y.dispose();
  assert.equal(backend.numDataIds(), dataIds - 1);
});

Deno.test("wasm fused linear attention: forward and gradients match the composed ops on cpu", async () => {
  const rng = deriveRng(7, "tests/wasm_kernels/attention");
  const cases = [
    { b: 2, h: 4, w: 3, c: 5, heads: 2, dimHead: 4 },
    { b: 1, h: 2, w: 2, c: 3, heads: 1, dimHead: 8 },
    { b: 3, h: 5, w: 1, c: 8, heads: 3, dimHead: 2 },
    { b: 2, h: 8, w: 8, c: 16, heads: 4, dimHead: 32 },
    ...Array.from({ length: 4 }, () => ({
      b: 1 + rng.int(3),
      h: 1 + rng.int(6),
      w: 1 + rng.int(6),
      c: 1 + rng.int(12),
      heads: 1 + rng.int(4),
      dimHead: 1 + rng.int(12),
    })),
  ];
  const run = (c: typeof cases[number], values: Map<string, Float32Array>) => {
    const out = new Map<string, Float32Array>();
    tf.tidy(() => {
      const hidden = c.heads * c.dimHead;
      const shapes: Record<string, number[]> = {
        "a.to_qkv.weight": [1, 1, c.c, 3 * hidden],
        "a.to_out.0.weight": [1, 1, hidden, c.c],
        "a.to_out.0.bias": [c.c],
        "a.to_out.1.weight": [c.c],
        "a.to_out.1.bias": [c.c],
        x: [c.b, c.h, c.w, c.c],
        dy: [c.b, c.h, c.w, c.c],
      };
      const t = new Map<string, tf.Tensor>();
      for (const [name, shape] of Object.entries(shapes)) {
        if (!values.has(name)) {
          values.set(name, rng.normal(shape.reduce((a, d) => a * d, 1)));
        }
        t.set(name, tf.tensor(values.get(name)!, shape));
      }
      const names = [...t.keys()].filter((k) => k !== "dy");
      const f = (...xs: tf.Tensor[]) => {
        const m = new Map(names.map((n, i) => [n, xs[i]]));
        const p = (n: string) => m.get(n)!;
        const merged = linearAttention(m.get("x") as tf.Tensor4D, p, "a", c);
        const y = groupNorm(conv(merged, p, "a.to_out.0"), p, "a.to_out.1", 1);
        return tf.sum(tf.mul(y, t.get("dy")!));
      };
      const grads = tf.grads(f)(names.map((n) => t.get(n)!));
      out.set("y", f(...names.map((n) => t.get(n)!)).dataSync() as Float32Array);
      names.forEach((n, i) => out.set(`d ${n}`, grads[i].dataSync() as Float32Array));
    });
    return out;
  };
  await matchesCpu(cases, run, 2e-4);
});

Deno.test("wasm fused GroupNorm: forward and gradients match the composed ops on cpu", async () => {
  const rng = deriveRng(8, "tests/wasm_kernels/groupnorm");
  const cases = [
    { b: 2, h: 4, w: 3, c: 8, groups: 4 },
    { b: 1, h: 1, w: 5, c: 6, groups: 1 },
    { b: 3, h: 2, w: 2, c: 12, groups: 3 },
    { b: 2, h: 16, w: 16, c: 32, groups: 4 },
    ...Array.from({ length: 4 }, () => {
      const groups = 1 + rng.int(4);
      return {
        b: 1 + rng.int(3),
        h: 1 + rng.int(6),
        w: 1 + rng.int(6),
        c: groups * (1 + rng.int(5)),
        groups,
      };
    }),
  ];
  const run = (c: typeof cases[number], values: Map<string, Float32Array>) => {
    const out = new Map<string, Float32Array>();
    tf.tidy(() => {
      const shapes: Record<string, number[]> = {
        x: [c.b, c.h, c.w, c.c],
        "n.weight": [c.c],
        "n.bias": [c.c],
        dy: [c.b, c.h, c.w, c.c],
      };
      const t = new Map<string, tf.Tensor>();
      for (const [name, shape] of Object.entries(shapes)) {
        if (!values.has(name)) {
          // An offset mean, as activations have, checks the variance's precision.
          values.set(name, rng.normal(shape.reduce((a, d) => a * d, 1)).map((v) => 3 + 2 * v));
        }
        t.set(name, tf.tensor(values.get(name)!, shape));
      }
      const names = ["x", "n.weight", "n.bias"];
      const f = (...xs: tf.Tensor[]) => {
        const m = new Map(names.map((n, i) => [n, xs[i]]));
        const y = groupNorm(m.get("x") as tf.Tensor4D, (n) => m.get(n)!, "n", c.groups);
        return tf.sum(tf.mul(y, t.get("dy")!));
      };
      const grads = tf.grads(f)(names.map((n) => t.get(n)!));
      const y = groupNorm(t.get("x") as tf.Tensor4D, (n) => t.get(n)!, "n", c.groups);
      out.set("y", y.dataSync() as Float32Array);
      names.forEach((n, i) => out.set(`d ${n}`, grads[i].dataSync() as Float32Array));
    });
    return out;
  };
  await matchesCpu(cases, run, 1e-4);
});
