import assert from "node:assert/strict";
import { tf } from "../src/tf.ts";
import { initBackend } from "../src/backend/mod.ts";
import {
  countParameters,
  createModel,
  type DenoiseModel,
  levelResolutions,
  withParams,
} from "../src/model/mod.ts";
import { dropoutMask } from "../src/model/layers.ts";
import { deriveRng } from "../src/rng.ts";
import { type ModelConfig, ModelSchema } from "../schemas/experiment.ts";

await initBackend("wasm");

const model = (section: Record<string, unknown>): ModelConfig => ModelSchema.parse(section);

/** The parameter count from the formulas of ../shared/reference/unet.md, written out again. */
function expectedCount(cfg: ModelConfig): number {
  const d = cfg.width;
  const c = cfg.channels;
  const n = cfg.resBlocks;
  const hidden = cfg.attention.heads * cfg.attention.dimHead;
  const time = 4 * d;
  const rb = (a: number, b: number) =>
    (time * 2 * b + 2 * b) + (9 * a * b + b + 2 * b) + (9 * b * b + b + 2 * b) +
    (a !== b ? a * b + b : 0);
  // linear: qkv 3hC + to_out hC + C + its GroupNorm 2C + the pre-norm 2C; full: no out norm.
  const attn = (kind: string, ch: number) =>
    kind === "linear" ? 4 * hidden * ch + 5 * ch : kind === "full" ? 4 * hidden * ch + 3 * ch : 0;
  const at = (level: number) =>
    cfg.attention.levels === "all" || cfg.attention.levels.includes(level)
      ? cfg.attention.kind
      : "none";
  const dims = [d, ...cfg.multipliers.map((m) => m * d)];
  const levels = cfg.multipliers.length;
  let total = c * d + d + (d * time + time) + (time * time + time);
  for (let i = 0; i < levels; i++) {
    const [a, b] = [dims[i], dims[i + 1]];
    total += n * rb(a, a) + attn(at(i), a) + (i < levels - 1 ? 4 * a * b + b : 9 * a * b + b);
    total += n * rb(b + a, b) + attn(at(i), b) + (9 * b * a + a);
  }
  const m = dims[levels];
  total += 2 * rb(m, m) + attn(cfg.middleAttention, m);
  total += rb(2 * d, d) + d * c + c;
  return total;
}

Deno.test("the defaults are the course U-Net: 2,430,595 parameters", () => {
  const cfg = model({});
  assert.deepEqual(
    { ...cfg },
    {
      kind: "unet",
      width: 16,
      multipliers: [1, 2, 4, 8],
      channels: 3,
      groups: 4,
      resBlocks: 2,
      attention: { kind: "linear", levels: "all", heads: 4, dimHead: 32 },
      middleAttention: "full",
      dropout: 0,
      prediction: "eps",
    },
  );
  assert.equal(countParameters(cfg), 2_430_595);
  assert.equal(expectedCount(cfg), 2_430_595);
});

Deno.test("parameter counts of generalised shapes match the reference formulas", () => {
  const shapes: Record<string, unknown>[] = [
    { width: 128, multipliers: [1, 1, 2, 2], groups: 32, attention: { kind: "full", levels: [2] } },
    { resBlocks: 1 },
    { resBlocks: 3, attention: { kind: "none" }, middleAttention: "none" },
    {
      attention: { kind: "full", levels: [0, 3], heads: 2, dimHead: 16 },
      middleAttention: "linear",
    },
    { width: 8, multipliers: [1, 2], attention: { levels: [] } },
    { width: 32, multipliers: [1], dropout: 0.3, prediction: "v" },
  ];
  for (const shape of shapes) {
    const cfg = model(shape);
    assert.equal(countParameters(cfg), expectedCount(cfg), JSON.stringify(shape));
  }
  // The DDPM-paper-shaped network of experiments/base/anime-ddpm.json.
  assert.equal(countParameters(model(shapes[0])), 22_071_043);
  // Dropout and the prediction target add no parameters.
  assert.equal(countParameters(model({ dropout: 0.1, prediction: "x0" })), 2_430_595);
});

Deno.test("parameter names keep the PyTorch ModuleList indices", () => {
  const names = (shape: Record<string, unknown>) => {
    const m = createModel(model({ width: 8, multipliers: [1, 2], ...shape }), {
      rng: deriveRng(0, "model/init"),
    });
    const out = [...m.params.keys()];
    m.dispose();
    return out;
  };
  const three = names({ resBlocks: 3 });
  assert.ok(three.includes("downs.0.2.block2.proj.weight"));
  assert.ok(three.includes("downs.0.3.fn.fn.to_qkv.weight"), "attention after 3 blocks");
  assert.ok(three.includes("downs.0.4.1.weight"), "downsample after the attention");
  assert.ok(three.includes("ups.1.4.weight"), "last up level: a 3x3 conv");
  const full = names({ attention: { kind: "full", levels: [1] }, middleAttention: "none" });
  assert.ok(!full.some((n) => n.startsWith("downs.0.2.")), "no attention at level 0");
  assert.ok(full.includes("downs.1.2.fn.fn.to_out.weight"), "full attention: to_out, no norm");
  assert.ok(full.includes("ups.0.2.fn.fn.to_out.weight"), "up level 0 runs at level 1's size");
  assert.ok(!full.some((n) => n.startsWith("ups.1.2.")));
  assert.ok(!full.some((n) => n.startsWith("mid_attn")));
  assert.ok(full.includes("mid_block2.mlp.1.weight"));
  const mid = names({ middleAttention: "linear" });
  assert.ok(mid.includes("mid_attn.fn.fn.to_out.1.weight"));
  assert.deepEqual(levelResolutions(4, 64), [64, 32, 16, 8]);
});

async function predict(
  m: DenoiseModel,
  options: { seed?: number; size?: number } = {},
): Promise<Float32Array> {
  const size = options.size ?? 8;
  const n = 2 * size * size * 3;
  const out = tf.tidy(() =>
    m.predict(
      tf.tensor4d(deriveRng(1, "x").normal(n), [2, size, size, 3]),
      tf.tensor1d([3, 17]),
      options.seed === undefined ? {} : { dropoutRng: deriveRng(options.seed, "dropout") },
    )
  );
  const v = (await out.data()) as Float32Array;
  out.dispose();
  return v;
}

Deno.test("forward passes of generalised shapes keep the image shape", async () => {
  const shapes: Record<string, unknown>[] = [
    { resBlocks: 1, attention: { kind: "full" } },
    { resBlocks: 3, attention: { kind: "none" }, middleAttention: "linear", groups: 2 },
    { multipliers: [1, 1, 2], attention: { kind: "full", levels: [1], heads: 2, dimHead: 8 } },
  ];
  for (const shape of shapes) {
    const m = createModel(model({ width: 8, multipliers: [1, 2], ...shape }), {
      rng: deriveRng(0, "model/init"),
    });
    const before = tf.memory().numTensors;
    const out = await predict(m);
    assert.equal(tf.memory().numTensors, before);
    assert.equal(out.length, 2 * 8 * 8 * 3);
    assert.ok(out.every(Number.isFinite), JSON.stringify(shape));
    m.dispose();
  }
});

Deno.test("dropout: masks from the seeded stream only; off without one", async () => {
  const make = (dropout: number) =>
    createModel(model({ width: 8, multipliers: [1, 2], dropout }), {
      rng: deriveRng(0, "model/init"),
    });
  const plain = make(0);
  const dropped = make(0.5);
  const reference = await predict(plain);
  assert.deepEqual(await predict(dropped), reference, "no generator: dropout is off");
  assert.deepEqual(await predict(plain, { seed: 1 }), reference, "rate 0: the generator is unused");
  const a = await predict(dropped, { seed: 1 });
  assert.deepEqual(await predict(dropped, { seed: 1 }), a, "same stream, same masks");
  assert.notDeepEqual(await predict(dropped, { seed: 2 }), a);
  assert.notDeepEqual(a, reference);
  // Gradients flow through the masks.
  const { value, grads } = tf.variableGrads(() =>
    tf.mean(
      dropped.predict(tf.ones([1, 8, 8, 3]), tf.tensor1d([5]), {
        dropoutRng: deriveRng(3, "dropout"),
      }),
    ) as tf.Scalar
  );
  assert.ok(Number.isFinite(value.dataSync()[0]));
  assert.equal(Object.keys(grads).length, dropped.params.size);
  tf.dispose([value, ...Object.values(grads)]);
  plain.dispose();
  dropped.dispose();
  // The mask: values 0 or 1 / (1 - rate), kept with probability 1 - rate.
  const mask = dropoutMask([100_000], { rate: 0.25, rng: deriveRng(4, "m") });
  const v = mask.dataSync();
  mask.dispose();
  assert.ok(v.every((u) => u === 0 || Math.abs(u - 4 / 3) < 1e-6));
  const kept = v.filter((u) => u > 0).length / v.length;
  assert.ok(Math.abs(kept - 0.75) < 0.01, `kept ${kept}`);
});

Deno.test("withParams computes the same network with other weights", async () => {
  const cfg = model({ width: 8, multipliers: [1, 2] });
  const a = createModel(cfg, { rng: deriveRng(0, "a") });
  const b = createModel(cfg, { rng: deriveRng(0, "b") });
  const copies = new Map([...b.params].map(([k, v]) => [k, tf.variable(v.clone())]));
  const aWithB = withParams(a, copies);
  assert.deepEqual(await predict(aWithB), await predict(b));
  assert.notDeepEqual(await predict(a), await predict(b));
  assert.throws(() => withParams(a, new Map()), /no parameter/);
  [a, b, aWithB].forEach((m) => m.dispose());
});
