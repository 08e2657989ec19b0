import assert from "node:assert/strict";
import { initBackend } from "../src/backend/mod.ts";
import {
  type ConditionInput,
  createModel,
  encodedWidth,
  encodeLabels,
  exportParams,
  fromTorchLayout,
  importParams,
} from "../src/model/mod.ts";
import { decodeSafetensors, type NamedArray } from "../src/io/safetensors.ts";
import { buildUnetOnnx } from "../src/onnx/export.ts";
import { decodeModel, IR_VERSION, OPSET } from "../src/onnx/graph.ts";
import { loadOnnxRuntime, openModel, OrtUnavailableError } from "../src/onnx/runtime.ts";
import { deriveRng } from "../src/rng.ts";
import { tf } from "../src/tf.ts";
import { type ModelConfig, ModelSchema } from "../schemas/experiment.ts";

await initBackend("wasm");
const ort = await loadOnnxRuntime();

/** The largest |a - b| and the largest |a|. */
function maxDiff(a: Float32Array, b: Float32Array): { diff: number; scale: number } {
  assert.equal(a.length, b.length);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(a[i]));
  }
  return { diff, scale };
}

/**
 * tfjs forward and ORT forward of the same random weights on the same input. A conditional
 * model (`labelSizes`) gets a random null embedding (it starts at zeros) and `condition`.
 */
async function compare(
  section: Record<string, unknown>,
  options: {
    size: number;
    batch: number;
    seed?: string;
    labelSizes?: number[];
    condition?: ConditionInput;
  },
): Promise<{ diff: number; scale: number; bytes: Uint8Array }> {
  const config: ModelConfig = ModelSchema.parse(section);
  const seed = options.seed ?? JSON.stringify(section);
  const { size, batch, labelSizes, condition } = options;
  const model = createModel(config, { rng: deriveRng(1, `onnx-test/${seed}`), labelSizes });
  const rng = deriveRng(2, `onnx-test/${seed}`);
  const weights = await exportParams(model);
  const nullEmb = weights.get("null_embedding");
  if (nullEmb) {
    weights.set("null_embedding", { ...nullEmb, data: rng.normal(nullEmb.data.length) });
    importParams(model, weights);
  }
  const shape = [batch, size, size, config.channels];
  const x = rng.normal(shape.reduce((a, b) => a * b, 1));
  const t = Float32Array.from({ length: batch }, (_, i) => (i * 37 + 5) % 200);
  const expected = tf.tidy(() =>
    model.predict(tf.tensor4d(x, shape as [number, number, number, number]), tf.tensor1d(t), {
      condition,
    })
  );
  const want = (await expected.data()) as Float32Array;
  expected.dispose();
  const bytes = buildUnetOnnx(config, weights, { size, labelSizes });
  model.dispose();
  const session = await openModel(ort, bytes, { providers: ["cpu"] });
  const cond = config.conditioning;
  const feeds = cond && labelSizes
    ? {
      labels: condition
        ? encodeLabels(condition.labels, { sizes: labelSizes, encoding: cond.encoding })
        : new Float32Array(batch * encodedWidth({ sizes: labelSizes, encoding: cond.encoding })),
      uncond: condition
        ? Float32Array.from(condition.drop ?? new Uint8Array(batch))
        : new Float32Array(batch).fill(1),
    }
    : undefined;
  const got = await session.run({ x, t, shape, condition: feeds });
  await session.release();
  return { ...maxDiff(want, got), bytes };
}

const CASES: [string, Record<string, unknown>, number][] = [
  ["the course U-Net", {}, 16],
  ["no attention, 1 res block, 8 groups", {
    width: 16,
    multipliers: [1, 2],
    groups: 8,
    resBlocks: 1,
    attention: { kind: "none" },
    middleAttention: "none",
  }, 8],
  ["full attention at level 1, 3 res blocks, linear middle", {
    width: 8,
    multipliers: [1, 2, 2],
    groups: 2,
    resBlocks: 3,
    attention: { kind: "full", levels: [1], heads: 2, dimHead: 8 },
    middleAttention: "linear",
  }, 8],
  ["linear attention at level 0 only, 1 channel, dropout (off at inference)", {
    width: 8,
    multipliers: [2, 3],
    channels: 1,
    groups: 1,
    attention: { kind: "linear", levels: [0], heads: 3, dimHead: 5 },
    dropout: 0.3,
    prediction: "v",
  }, 8],
];

for (const [label, section, size] of CASES) {
  Deno.test(`onnx forward == tfjs forward: ${label}`, async () => {
    const { diff, scale } = await compare(section, { size, batch: 3 });
    assert.ok(scale > 0.05, `outputs are not trivially zero (max |out| ${scale})`);
    console.log(`${label}: max |onnx - tfjs| ${diff.toExponential(2)}, max |out| ${scale}`);
    assert.ok(diff < 1e-4, `max |onnx - tfjs| = ${diff}`);
  });
}

const CONDITIONAL = {
  attributes: ["hair", "glasses"],
  layers: 2,
  width: 8,
  tokens: 3,
};
const LABELS = Int32Array.from([2, 0, 0, 1, 1, 1]); // 3 examples, hair of 3, glasses of 2
const CONDITIONAL_CASES: [string, Record<string, unknown>, ConditionInput | undefined][] = [
  ["one-hot labels into the time embedding", {
    width: 8,
    multipliers: [1, 2],
    groups: 4,
    conditioning: { ...CONDITIONAL, encoding: "onehot" },
  }, { labels: LABELS }],
  ["integer labels, 3 tau layers, cross-attention at level 1 and the middle, one example dropped", {
    width: 8,
    multipliers: [1, 2],
    groups: 4,
    attention: { kind: "full", heads: 2, dimHead: 4 },
    conditioning: {
      ...CONDITIONAL,
      encoding: "integer",
      layers: 3,
      crossAttention: { levels: [1], middle: true, heads: 2, dimHead: 4 },
    },
  }, { labels: LABELS, drop: Uint8Array.from([0, 1, 0]) }],
  ["cross-attention only (no time projection), every level", {
    width: 8,
    multipliers: [1, 2, 2],
    groups: 2,
    resBlocks: 1,
    conditioning: {
      ...CONDITIONAL,
      time: false,
      crossAttention: { levels: "all", middle: false, heads: 3, dimHead: 5 },
    },
  }, { labels: LABELS }],
  ["the null embedding for every example (no labels)", {
    width: 8,
    multipliers: [1, 2],
    groups: 4,
    conditioning: { ...CONDITIONAL, crossAttention: { heads: 1, dimHead: 8 } },
  }, undefined],
];

for (const [label, section, condition] of CONDITIONAL_CASES) {
  Deno.test(`onnx forward == tfjs forward, conditional: ${label}`, async () => {
    const { diff, scale } = await compare(section, {
      size: 8,
      batch: 3,
      labelSizes: [3, 2],
      condition,
    });
    assert.ok(scale > 0.05, `outputs are not trivially zero (max |out| ${scale})`);
    console.log(`${label}: max |onnx - tfjs| ${diff.toExponential(2)}, max |out| ${scale}`);
    assert.ok(diff < 1e-4, `max |onnx - tfjs| = ${diff}`);
  });
}

Deno.test("a conditional export takes condition and uncond, and refuses a run without them", async () => {
  const config = ModelSchema.parse(CONDITIONAL_CASES[1][1]);
  const model = createModel(config, { rng: deriveRng(0, "x"), labelSizes: [3, 2] });
  const weights = await exportParams(model);
  model.dispose();
  assert.throws(
    () => buildUnetOnnx(config, weights, { size: 8 }),
    /a conditional model needs the label sizes/,
  );
  const bytes = buildUnetOnnx(config, weights, { size: 8, labelSizes: [3, 2] });
  const graph = decodeModel(bytes).graph!;
  assert.deepEqual(graph.input!.map((i) => i.name), ["x", "t", "condition", "uncond"]);
  const dims = graph.input![2].type!.tensorType!.shape!.dim!.map((d) =>
    d.dimParam || Number(d.dimValue)
  );
  assert.deepEqual(dims, ["batch", 2], "integer encoding: one column per attribute");
  const props = new Map(decodeModel(bytes).metadataProps.map((p) => [p.key, p.value]));
  assert.deepEqual(JSON.parse(props.get("ddpm-lab.condition")!), {
    attributes: ["hair", "glasses"],
    sizes: [3, 2],
    encoding: "integer",
  });
  const session = await openModel(ort, bytes, { providers: ["cpu"] });
  assert.equal(session.conditional, true);
  await assert.rejects(
    session.run({ x: new Float32Array(192), t: new Float32Array(1), shape: [1, 8, 8, 3] }),
    /this model is conditional: labels are needed/,
  );
  await session.release();
});

Deno.test("a provider that cannot open the model is passed over, with the reason recorded", async () => {
  const config = ModelSchema.parse({ width: 8, multipliers: [1, 2] });
  const model = createModel(config, { rng: deriveRng(0, "providers") });
  const bytes = buildUnetOnnx(config, await exportParams(model), { size: 8 });
  model.dispose();
  const feeds = {
    x: deriveRng(1, "providers").normal(2 * 8 * 8 * 3),
    t: Float32Array.of(3, 100),
    shape: [2, 8, 8, 3],
  };
  const cpu = await openModel(ort, bytes, { providers: ["cpu"] });
  const want = await cpu.run(feeds);
  await cpu.release();
  // WebGPU first: a machine without a usable adapter (these CI machines: ORT's Dawn refuses
  // Mesa's software Vulkan) opens the CPU session and says why; one with an adapter runs it.
  const session = await openModel(ort, bytes, { providers: ["webgpu", "cpu"] });
  const got = await session.run(feeds);
  await session.release();
  assert.ok(maxDiff(want, got).diff < 1e-4);
  if (session.provider === "cpu") {
    assert.match(session.reason, /^first provider that loaded of webgpu, cpu \(webgpu: .+\)$/);
    await assert.rejects(
      openModel(ort, bytes, { providers: ["webgpu"] }),
      /^Error: onnxruntime: no execution provider could run the model \(webgpu: /,
    );
  } else {
    assert.equal(session.provider, "webgpu");
  }
});

Deno.test("the exported model is plain ONNX: IR 8, opset 17, NHWC input x, t, output out", async () => {
  const { bytes } = await compare({ width: 8, multipliers: [1, 2] }, { size: 8, batch: 1 });
  const m = decodeModel(bytes);
  const graph = m.graph!;
  assert.equal(Number(m.irVersion), IR_VERSION);
  assert.deepEqual(m.opsetImport.map((o) => [o.domain, Number(o.version)]), [["", OPSET]]);
  assert.deepEqual(graph.input!.map((i) => i.name), ["x", "t"]);
  assert.deepEqual(graph.output!.map((o) => o.name), ["out"]);
  const dims = graph.input![0].type!.tensorType!.shape!.dim!.map((d) =>
    d.dimParam || Number(d.dimValue)
  );
  assert.deepEqual(dims, ["batch", 8, 8, 3]);
  const ops = new Set(graph.node!.map((n) => n.opType));
  assert.ok(!ops.has("Einsum") && ops.has("MatMul") && ops.has("InstanceNormalization"));
});

Deno.test("onnx export refuses weights that do not match the config", async () => {
  const config = ModelSchema.parse({ width: 8, multipliers: [1, 2] });
  const model = createModel(config, { rng: deriveRng(0, "x") });
  const weights = await exportParams(model);
  model.dispose();
  assert.throws(
    () => buildUnetOnnx({ ...config, middleAttention: "none" }, weights, { size: 8 }),
    /5 weights are not part of the model config's network \(mid_attn\.fn\.fn\.to_qkv\.weight/,
  );
  assert.throws(
    () => buildUnetOnnx({ ...config, width: 16 }, weights, { size: 8 }),
    /time_mlp\.1\.weight has shape \[8,32\], the model config needs \[16,64\]/,
  );
  weights.delete("final_conv.bias");
  assert.throws(
    () => buildUnetOnnx(config, weights, { size: 8 }),
    /the weights have no final_conv\.bias/,
  );
});

Deno.test("onnx export gives the same bytes twice", async () => {
  const config = ModelSchema.parse({ width: 8, multipliers: [1, 2] });
  const model = createModel(config, { rng: deriveRng(0, "x") });
  const weights = await exportParams(model);
  model.dispose();
  const a = buildUnetOnnx(config, weights, { size: 8 });
  const b = buildUnetOnnx(config, weights, { size: 8 });
  assert.deepEqual(a, b);
});

Deno.test("loadOnnxRuntime explains a package that cannot load", async () => {
  const err = await loadOnnxRuntime(() =>
    Promise.reject(new Error('Requires ffi access to "onnxruntime_binding.node"'))
  ).catch((e) => e);
  assert.ok(err instanceof OrtUnavailableError);
  assert.match(err.message, /onnxruntime-node could not be loaded \(Requires ffi access/);
  assert.match(err.message, /--allow-ffi/);
});

Deno.test("onnx forward matches the PyTorch reference fixture", async () => {
  const fixture = new URL("./fixtures/unet_small.safetensors", import.meta.url);
  const { tensors } = decodeSafetensors(await Deno.readFile(fixture));
  const state = new Map<string, NamedArray>();
  for (const [k, v] of tensors) if (k.startsWith("model.")) state.set(k.slice(6), v);
  const config = ModelSchema.parse({ width: 8, multipliers: [1, 2] });
  const x = tensors.get("input.x")!; // NCHW
  const [b, c, h, w] = x.shape;
  const nhwc = new Float32Array(x.data.length);
  for (let n = 0; n < b; n++) {
    for (let ch = 0; ch < c; ch++) {
      for (let i = 0; i < h * w; i++) {
        nhwc[(n * h * w + i) * c + ch] = x.data[(n * c + ch) * h * w + i];
      }
    }
  }
  const bytes = buildUnetOnnx(config, fromTorchLayout(state), { size: h });
  const session = await openModel(ort, bytes, { providers: ["cpu"] });
  const out = await session.run({ x: nhwc, t: tensors.get("input.t")!.data, shape: [b, h, w, c] });
  await session.release();
  const ref = tensors.get("output.eps")!.data;
  let diff = 0;
  for (let n = 0; n < b; n++) {
    for (let ch = 0; ch < c; ch++) {
      for (let i = 0; i < h * w; i++) {
        diff = Math.max(
          diff,
          Math.abs(out[(n * h * w + i) * c + ch] - ref[(n * c + ch) * h * w + i]),
        );
      }
    }
  }
  assert.ok(diff < 1e-4, `max |onnx - torch| = ${diff}`);
});
