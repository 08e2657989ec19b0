/**
 * `variableGradsLowMemory` (src/backend/tape.ts) against `tf.variableGrads`: same bits, no
 * leaked tensors, and a lower memory peak.
 * @module
 */
import assert from "node:assert/strict";
import { tf } from "../src/tf.ts";
import { initBackend } from "../src/backend/mod.ts";
import { variableGradsLowMemory } from "../src/backend/tape.ts";
import { createModel } from "../src/model/mod.ts";
import { ModelSchema } from "../schemas/experiment.ts";
import { deriveRng } from "../src/rng.ts";

function lossOf(model: ReturnType<typeof createModel>, n: number): () => tf.Scalar {
  const rng = deriveRng(3, "tests/tape");
  const x = rng.normal(n * 8 * 8 * 3);
  const t = Float32Array.from({ length: n }, (_, i) => 7 * i + 1);
  const target = rng.normal(n * 8 * 8 * 3);
  return () => {
    const y = model.predict(tf.tensor4d(x, [n, 8, 8, 3]), tf.tensor1d(t));
    return tf.mean(tf.abs(tf.sub(y, tf.tensor4d(target, [n, 8, 8, 3]))));
  };
}

type GradsFn = (
  f: () => tf.Scalar,
  varList: tf.Variable[],
) => { value: tf.Scalar; grads: tf.NamedTensorMap };

async function gradsOf(
  fn: GradsFn,
  model: ReturnType<typeof createModel>,
): Promise<{ loss: number; grads: Map<string, Float32Array>; leaked: number; peak: number }> {
  const vars = [...model.params.values()];
  const before = tf.memory().numTensors;
  const f = lossOf(model, 3);
  let out: { value: tf.Scalar; grads: tf.NamedTensorMap } | undefined;
  const profile = await tf.profile(() => {
    out = fn(f, vars);
  });
  const { value, grads } = out!;
  const result = new Map<string, Float32Array>();
  for (const [name, g] of Object.entries(grads)) result.set(name, (await g.data()) as Float32Array);
  const loss = (await value.data())[0];
  tf.dispose([value, ...Object.values(grads)]);
  return { loss, grads: result, leaked: tf.memory().numTensors - before, peak: profile.peakBytes };
}

for (const backend of ["wasm", "cpu"] as const) {
  Deno.test(`variableGradsLowMemory gives tf.variableGrads' bits with a lower peak (${backend})`, async () => {
    await initBackend(backend);
    const model = createModel(ModelSchema.parse({ width: 8, multipliers: [1, 2] }), {
      rng: deriveRng(0, "model/init"),
    });
    const ref = await gradsOf(tf.variableGrads, model);
    const low = await gradsOf(variableGradsLowMemory, model);
    model.dispose();
    assert.equal(low.loss, ref.loss);
    assert.deepEqual([...low.grads.keys()].sort(), [...ref.grads.keys()].sort());
    for (const [name, g] of ref.grads) assert.deepEqual(low.grads.get(name), g, name);
    assert.equal(ref.leaked, 0);
    assert.equal(low.leaked, 0);
    assert.ok(low.peak < ref.peak, `peak ${low.peak} bytes, tf.variableGrads ${ref.peak}`);
  });
}
