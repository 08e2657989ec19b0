/**
 * `variableGradsLowMemory` (src/backend/tape.ts) against `tf.variableGrads`: same bits, no
 * leaked tensors, and a lower memory peak.
 * @module
 */
import assert from "node:assert/strict";
import { tf } from "../src/tf.ts";
import { initBackend } from "../src/backend/mod.ts";
import { variableGradsLowMemory } from "../src/backend/tape.ts";
import {
  checkTfjsInternals,
  TESTED_TFJS_VERSION,
  tfjsInternalsUsable,
} from "../src/backend/tfjs_internals.ts";
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

Deno.test("tfjs internals are used only with the tested tfjs version", () => {
  assert.deepEqual(checkTfjsInternals(TESTED_TFJS_VERSION), {
    usable: true,
    version: TESTED_TFJS_VERSION,
  });
  const other = checkTfjsInternals("4.23.0");
  assert.equal(other.usable, false);
  assert.match(other.reason ?? "", /tfjs 4\.23\.0 is installed.*tfjs 4\.22\.0.*tf\.variableGrads/);
  // This checkout pins the tested version, so the fused kernels and the tape walk are on.
  assert.equal(tf.version.tfjs, TESTED_TFJS_VERSION);
  assert.equal(tfjsInternalsUsable(), true);
});

Deno.test("the model does not import the backend (layers call neutral ops)", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", new URL("../src/model/mod.ts", import.meta.url).pathname],
    stdout: "piped",
    stderr: "null",
  }).output();
  const graph = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    modules: { specifier: string }[];
  };
  const local = graph.modules.map((m) => m.specifier).filter((s) => s.includes("/src/"));
  assert.ok(local.some((s) => s.endsWith("/src/model/ops.ts")));
  assert.deepEqual(local.filter((s) => s.includes("/src/backend/")), []);
});
