/**
 * The update kernels (src/gpu/kernels/optimizer.ts): each kernel against its float32 reference
 * at odd sizes, the references against the tfjs Adam / clipping / EMA of src/train over named
 * variables (flat = their concatenation padded to 64 floats), and three GPU steps run as the
 * engine runs them (hyper written per step) against tfjs.
 */
import assert from "node:assert/strict";
import { EmaSchema, type OptimizerConfig, OptimizerSchema } from "../../schemas/experiment.ts";
import {
  ADAM_HYPER_LENGTH,
  adamHyper,
  type AdamHyperConfig,
  adamUpdate,
  adamUpdateRef,
  EMA_HYPER_LENGTH,
  emaHyper,
  emaUpdate,
  emaUpdateRef,
  globalNormSquared,
  globalNormSquaredRef,
  NORM_MAX_PARTIALS,
  normPartials,
} from "../../src/gpu/kernels/optimizer.ts";
import type { KernelSpec } from "../../src/gpu/kernel.ts";
import { runKernel } from "../../src/gpu/testing.ts";
import { tf } from "../../src/tf.ts";
import { clipByGlobalNorm } from "../../src/train/clip.ts";
import { Ema } from "../../src/train/ema.ts";
import { learningRate } from "../../src/train/lr.ts";
import { Adam } from "../../src/train/optimizer.ts";
import { assertClose, device, noGpu, testData } from "./device.ts";
import { KernelSequence } from "./sequence.ts";

await tf.setBackend("cpu");

/** `spec` with some bindings bound to other buffer names. */
function renameBinding(spec: KernelSpec, names: Record<string, string>): KernelSpec {
  return { ...spec, bindings: spec.bindings.map((b) => ({ ...b, name: names[b.name] ?? b.name })) };
}

/** Named parameter shapes with odd sizes (15, 7, 18, 1 floats). */
const SHAPES: Record<string, number[]> = {
  "conv.w": [3, 5],
  "conv.b": [7],
  "attn.w": [2, 3, 3, 1],
  "scale": [1],
};
const ALIGN = 64;

/** Where each parameter starts in the flat buffer (padded to 64 floats) and its total length. */
function layout(): { offsets: Map<string, number>; length: number } {
  const offsets = new Map<string, number>();
  let at = 0;
  for (const [name, shape] of Object.entries(SHAPES)) {
    offsets.set(name, at);
    at += Math.ceil(shape.reduce((a, b) => a * b, 1) / ALIGN) * ALIGN;
  }
  return { offsets, length: at };
}

/** The flat buffer of named arrays (zero padding). */
function flatten(arrays: Record<string, Float32Array>): Float32Array<ArrayBuffer> {
  const { offsets, length } = layout();
  const out = new Float32Array(length);
  for (const [name, at] of offsets) out.set(arrays[name], at);
  return out;
}

/** Asserts that every padding float of a flat buffer is exactly 0. */
function assertPaddingZero(flat: Float32Array, what: string): void {
  const { offsets } = layout();
  const inside = new Uint8Array(flat.length);
  for (const [name, at] of offsets) {
    inside.fill(1, at, at + SHAPES[name].reduce((a, b) => a * b, 1));
  }
  for (let i = 0; i < flat.length; i++) {
    if (!inside[i] && flat[i] !== 0) throw new Error(`${what}: padding ${i} is ${flat[i]}`);
  }
}

/** Initial parameters and the gradients of step k (1-based), by name. */
function params(): Record<string, Float32Array> {
  return Object.fromEntries(
    Object.entries(SHAPES).map(([name, shape], i) => [
      name,
      testData(shape.reduce((a, b) => a * b, 1), 10 + i),
    ]),
  );
}
function grads(step: number): Record<string, Float32Array> {
  return Object.fromEntries(
    Object.entries(SHAPES).map(([name, shape], i) => [
      name,
      testData(shape.reduce((a, b) => a * b, 1), 100 * step + i).map((v) => v * step),
    ]),
  );
}

const TOTAL_STEPS = 3;

/** An optimizer section whose lr changes every step (warmup then cosine). */
function optimizerConfig(clipGradNorm?: number): OptimizerConfig & AdamHyperConfig {
  return {
    ...OptimizerSchema.parse({
      lr: 0.01,
      warmupSteps: 2,
      lrDecay: "cosine",
      minLr: 0.001,
      ...(clipGradNorm === undefined ? {} : { clipGradNorm }),
    }),
    totalSteps: TOTAL_STEPS + 1,
  };
}

/** The tfjs Adam (and EMA) over named variables for three steps, as src/train/step.ts runs it. */
async function tfjsRun(
  clip: number | undefined,
): Promise<{ p: Float32Array; m: Float32Array; v: Float32Array; ema: Float32Array }> {
  const config = optimizerConfig(clip);
  const vars = new Map<string, tf.Variable>();
  for (const [name, data] of Object.entries(params())) {
    vars.set(name, tf.variable(tf.tensor(data, SHAPES[name])));
  }
  const adam = new Adam(vars, config);
  const ema = new Ema(vars, EmaSchema.parse({ decay: 0.95, startStep: 1 }));
  for (let step = 1; step <= TOTAL_STEPS; step++) {
    tf.tidy(() => {
      let g: Record<string, tf.Tensor> = {};
      for (const [name, data] of Object.entries(grads(step))) {
        g[name] = tf.tensor(data, SHAPES[name]);
      }
      if (clip !== undefined) g = clipByGlobalNorm(g, clip).grads;
      adam.apply(vars, g, { lr: learningRate(step, config) });
    });
    ema.update(vars, step);
  }
  const state = await adam.exportState();
  const named = (suffix: string) =>
    flatten(
      Object.fromEntries(
        Object.keys(SHAPES).map((name) => [name, state.tensors.get(`${name}${suffix}`)!.data]),
      ),
    );
  const p = flatten(
    Object.fromEntries([...vars].map(([name, v]) => [name, v.dataSync() as Float32Array])),
  );
  const e = flatten(
    Object.fromEntries([...ema.params].map(([name, v]) => [name, v.dataSync() as Float32Array])),
  );
  const out = { p, m: named(".exp_avg"), v: named(".exp_avg_sq"), ema: e };
  adam.dispose();
  ema.dispose();
  vars.forEach((v) => v.dispose());
  return out;
}

const EMA_CONFIG = EmaSchema.parse({ decay: 0.95, startStep: 1 });

/** The same three steps with the flat references. */
function refRun(clip: number | undefined): {
  p: Float32Array;
  m: Float32Array;
  v: Float32Array;
  ema: Float32Array;
} {
  const config = optimizerConfig(clip);
  let p = flatten(params());
  let m = new Float32Array(p.length);
  let v = new Float32Array(p.length);
  let ema = p.slice();
  for (let step = 1; step <= TOTAL_STEPS; step++) {
    const g = flatten(grads(step));
    const norm = clip === undefined ? undefined : globalNormSquaredRef(g);
    ({ p, m, v } = adamUpdateRef({ p, g, m, v }, adamHyper(step, config), { norm }));
    ema = emaUpdateRef({ ema, p }, emaHyper(step, EMA_CONFIG));
  }
  return { p, m, v, ema };
}

Deno.test("adamHyper and emaHyper: the tfjs step's numbers, one layout", () => {
  const config = optimizerConfig(0.5);
  const h = adamHyper(1, config);
  assert.equal(h.length, ADAM_HYPER_LENGTH);
  const lr = learningRate(1, config); // warmup: 0.01 · 1 / 2
  assert.equal(lr, 0.005);
  assert.deepEqual(
    [...h],
    [0.9, 1 - 0.9, 0.999, 1 - 0.999, Math.sqrt(1 - 0.999), 1e-8, lr / (1 - 0.9), 0.5].map(
      Math.fround,
    ),
  );
  assert.equal(adamHyper(2, config, { lr: 0.25 })[6], Math.fround(0.25 / (1 - 0.9 ** 2)));
  assert.equal(adamHyper(1, optimizerConfig())[7], 0);
  const ema = EmaSchema.parse({ decay: 0.99, startStep: 2 });
  assert.equal(emaHyper(1, ema).length, EMA_HYPER_LENGTH);
  assert.deepEqual([...emaHyper(2, ema)], [0, 1]);
  // j = 0: d = 1 / 10; j = 100: d = min(0.99, 101 / 110).
  assert.deepEqual([...emaHyper(3, ema)], [0.1, 0.9].map(Math.fround));
  assert.deepEqual([...emaHyper(103, ema)], [101 / 110, 1 - 101 / 110].map(Math.fround));
  assert.deepEqual([...emaHyper(10_000, ema)], [0.99, 1 - 0.99].map(Math.fround));
});

Deno.test("the flat references equal tfjs's Adam, clipping and EMA over named variables", async () => {
  for (const clip of [undefined, 2]) {
    const tfjs = await tfjsRun(clip);
    const ref = refRun(clip);
    for (const key of ["p", "m", "v", "ema"] as const) {
      assertClose(ref[key], tfjs[key], 1e-6, `${key} (clip ${clip})`);
      assertPaddingZero(ref[key], `${key} (clip ${clip})`);
    }
    // The run moved the weights, and the EMA is neither the weights nor the start.
    assert.ok(Math.abs(ref.p[0] - params()["conv.w"][0]) > 1e-3);
    assert.ok(Math.abs(ref.ema[0] - ref.p[0]) > 1e-5);
  }
  // Clipping is active at 2: the first step's norm is above it.
  assert.ok(Math.sqrt(globalNormSquaredRef(flatten(grads(1)))) > 2);
});

Deno.test("globalNormSquaredRef is clip.ts's squared norm within 1e-6", () => {
  for (const n of [1, 1000, 70_001]) {
    const g = testData(n, n);
    const tfNorm = tf.tidy(() =>
      clipByGlobalNorm({ a: tf.tensor(g.subarray(0, n >> 1)), b: tf.tensor(g.subarray(n >> 1)) }, 1)
        .norm.dataSync()[0]
    );
    const norm = Math.sqrt(globalNormSquaredRef(g));
    assert.ok(Math.abs(norm - tfNorm) <= 1e-6 * tfNorm, `n ${n}: ${norm} vs ${tfNorm}`);
  }
  assert.equal(normPartials(1), 1);
  assert.equal(normPartials(70_001), 18);
  assert.equal(normPartials(1e9), NORM_MAX_PARTIALS);
});

Deno.test({
  name: "globalNormSquared equals its reference (odd sizes, the partials at their maximum)",
  ignore: noGpu,
  fn: async () => {
    for (const n of [1, 257, 70_001, NORM_MAX_PARTIALS * 4096 + 4099]) {
      const g = testData(n, 7 + n);
      const [partials, total] = globalNormSquared(n);
      const { tmp } = await runKernel(device(), partials, { g });
      assert.equal(tmp.length, normPartials(n));
      const { norm } = await runKernel(device(), total, { tmp: tmp.slice() });
      const ref = globalNormSquaredRef(g);
      assert.ok(Math.abs(norm[0] - ref) <= 1e-6 * ref, `n ${n}: ${norm[0]} vs ${ref}`);
    }
  },
});

Deno.test({
  name: "adamUpdate and emaUpdate equal their references (odd size, clip on and off)",
  ignore: noGpu,
  fn: async () => {
    const n = 3001;
    const g = testData(n, 1);
    const state = {
      p: testData(n, 2),
      g,
      m: testData(n, 3).map((x) => x * 0.1),
      v: testData(n, 4).map((x) => x * x * 0.01),
    };
    const hyper = adamHyper(3, optimizerConfig(0.5));
    for (const clip of [false, true]) {
      const norm = Float32Array.of(globalNormSquaredRef(g));
      const gpu = await runKernel(device(), adamUpdate(n, { clip }), {
        ...state,
        hyper,
        ...(clip ? { norm } : {}),
      });
      const ref = adamUpdateRef(state, hyper, clip ? { norm: norm[0] } : {});
      for (const key of ["p", "m", "v"] as const) {
        assertClose(gpu[key], ref[key], 1e-6, `${key} (clip ${clip})`);
      }
      if (clip) assert.ok(Math.abs(ref.m[0] - Math.fround(state.m[0] * 0.9 + g[0] * 0.1)) > 1e-4);
    }
    const ema = testData(n, 5);
    for (const step of [1, 4]) {
      const h = emaHyper(step, EMA_CONFIG);
      const gpu = await runKernel(device(), emaUpdate(n), { ema, p: state.p, hyper: h });
      assertClose(gpu.ema, emaUpdateRef({ ema, p: state.p }, h), 1e-6, `ema step ${step}`);
    }
    // At startStep the average is the weights, bit for bit.
    const copy = await runKernel(device(), emaUpdate(n), {
      ema,
      p: state.p,
      hyper: emaHyper(1, EMA_CONFIG),
    });
    assert.deepEqual(copy.ema, state.p);
  },
});

Deno.test({
  name: "emaUpdate over a folded grid (more than 65535 workgroups)",
  ignore: noGpu,
  fn: async () => {
    const n = 65535 * 256 + 3;
    const spec = emaUpdate(n);
    assert.ok(spec.workgroups[1] > 1);
    const p = testData(n, 9);
    const { ema } = await runKernel(device(), spec, {
      p,
      hyper: Float32Array.of(0.5, 0.25),
    });
    for (const i of [0, 1, 65535 * 256 - 1, 65535 * 256, n - 1]) {
      assert.equal(ema[i], Math.fround(p[i] * 0.25), `at ${i}`);
    }
  },
});

Deno.test({
  name:
    "three engine steps (norm, clipped Adam, EMA; hyper per step) equal tfjs, twice the same bytes",
  ignore: noGpu,
  fn: async () => {
    const clip = 2;
    const config = optimizerConfig(clip);
    const n = layout().length;
    const norm = globalNormSquared(n);
    // Two hyper buffers, as the engine has: the binding `hyper` of each kernel renamed.
    const adam = renameBinding(adamUpdate(n, { clip: true }), { hyper: "hyper_adam" });
    const ema = renameBinding(emaUpdate(n), { hyper: "hyper_ema" });
    const steps = [...norm, adam, ema];
    const runOnce = async (): Promise<Record<string, Uint8Array>> => {
      const seq = new KernelSequence(device(), steps);
      const p0 = flatten(params());
      seq.write("p", p0);
      seq.write("ema", p0);
      for (let step = 1; step <= TOTAL_STEPS; step++) {
        seq.write("g", flatten(grads(step)));
        seq.write("hyper_adam", adamHyper(step, config));
        seq.write("hyper_ema", emaHyper(step, EMA_CONFIG));
        await seq.run(steps);
      }
      const out: Record<string, Uint8Array> = {};
      for (const key of ["p", "m", "v", "ema"]) {
        out[key] = new Uint8Array((await seq.read(key)).buffer);
      }
      seq.destroy();
      return out;
    };
    const first = await runOnce();
    const tfjs = await tfjsRun(clip);
    for (const key of ["p", "m", "v", "ema"] as const) {
      const gpu = new Float32Array(first[key].buffer);
      assertClose(gpu, tfjs[key], 1e-6, key);
      assertPaddingZero(gpu, key);
    }
    const second = await runOnce();
    for (const key of ["p", "m", "v", "ema"]) assert.deepEqual(second[key], first[key], key);
  },
});
