import assert from "node:assert/strict";
import { tf } from "../src/tf.ts";
import { countParameters, createModel, fromTorchLayout, importParams } from "../src/model/mod.ts";
import { decodeSafetensors, type NamedArray } from "../src/io/safetensors.ts";
import { deriveRng } from "../src/rng.ts";
import { ModelSchema } from "../schemas/experiment.ts";

const fixture = new URL("./fixtures/unet_small.safetensors", import.meta.url);

Deno.test("course U-Net Unet(16, (1, 2, 4, 8), 3) has exactly 2,430,595 parameters", () => {
  const config = ModelSchema.parse({ width: 16, multipliers: [1, 2, 4, 8], channels: 3 });
  assert.equal(countParameters(config), 2_430_595);
  const model = createModel(config, { rng: deriveRng(0, "model/init") });
  let n = 0;
  model.params.forEach((v) => n += v.size);
  model.dispose();
  assert.equal(n, 2_430_595);
});

Deno.test("parameter names and shapes match the PyTorch state dict of the fixture", () => {
  const { tensors } = decodeSafetensors(Deno.readFileSync(fixture));
  const torchNames = [...tensors.keys()].filter((k) => k.startsWith("model.")).map((k) =>
    k.slice(6)
  );
  const model = createModel(ModelSchema.parse({ width: 8, multipliers: [1, 2] }), {
    rng: deriveRng(0, "model/init"),
  });
  assert.deepEqual([...model.params.keys()], torchNames);
  model.dispose();
});

async function forwardOnBackend(backend: string): Promise<{ ours: Float32Array; ref: NamedArray }> {
  await tf.setBackend(backend);
  const { tensors } = decodeSafetensors(Deno.readFileSync(fixture));
  const state = new Map<string, NamedArray>();
  for (const [k, v] of tensors) if (k.startsWith("model.")) state.set(k.slice(6), v);
  const model = createModel(ModelSchema.parse({ width: 8, multipliers: [1, 2] }), {
    rng: deriveRng(0, "model/init"),
  });
  importParams(model, fromTorchLayout(state));
  const x = tensors.get("input.x")!; // NCHW
  const t = tensors.get("input.t")!;
  const out = tf.tidy(() => {
    const xin = tf.transpose(tf.tensor4d(x.data, x.shape as [number, number, number, number]), [
      0,
      2,
      3,
      1,
    ]);
    const y = model.predict(xin as tf.Tensor4D, tf.tensor1d(t.data));
    return tf.transpose(y, [0, 3, 1, 2]); // back to NCHW
  });
  const ours = (await out.data()) as Float32Array;
  out.dispose();
  model.dispose();
  return { ours, ref: tensors.get("output.eps")! };
}

for (const backend of ["cpu", "wasm"]) {
  Deno.test(`forward pass matches PyTorch to float32 precision (${backend})`, async () => {
    if (backend === "wasm") {
      await import("../src/backend/mod.ts").then((m) => m.initBackend("wasm"));
    }
    const { ours, ref } = await forwardOnBackend(backend);
    assert.equal(ours.length, ref.data.length);
    let maxDiff = 0;
    let maxAbs = 0;
    for (let i = 0; i < ours.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(ours[i] - ref.data[i]));
      maxAbs = Math.max(maxAbs, Math.abs(ref.data[i]));
    }
    assert.ok(maxAbs > 0.1, "fixture output is not trivial");
    assert.ok(maxDiff < 1e-4, `max abs difference ${maxDiff} (max |ref| ${maxAbs})`);
  });
}
