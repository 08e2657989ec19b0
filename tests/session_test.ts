/**
 * One way to open a run (src/run/session.ts): what each purpose brings up, the trained weights
 * as the samplers see them, and everything freed together by `await using`.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadExperiment } from "../src/config/mod.ts";
import { decodeSafetensors } from "../src/io/safetensors.ts";
import { RunSession } from "../src/run/session.ts";
import { tf } from "../src/tf.ts";
import { experimentFile, runFile, TEST_CACHE, TINY } from "./helpers.ts";

Deno.test("run session: each purpose opens what it needs and await using frees it all", async () => {
  const body = { ...TINY, optimizer: { ema: { decay: 0.9 } } };
  const trained = await runFile(await experimentFile(body));
  const loaded = await loadExperiment(join(trained.dir, "config.json"));
  const checkpoint = join(trained.dir, "checkpoint");
  const before = tf.memory().numTensors;
  {
    await using session = await RunSession.open(loaded, {
      purpose: "sample",
      checkpoint,
      cacheDir: TEST_CACHE,
    });
    assert.equal(session.dataset?.count, 24);
    assert.equal(session.size, 8);
    assert.equal(session.checkpoint?.step, trained.manifest.summary.steps);
    assert.equal(session.weights, "ema");
    assert.equal(session.parameters, trained.manifest.summary.parameters);
    assert.throws(() => session.optimizer, /no optimizer/);
    assert.equal(session.trainEngine, undefined);
    // The samplers see the EMA weights of the checkpoint, not the model's.
    const ema = decodeSafetensors(await Deno.readFile(join(checkpoint, "ema.safetensors")));
    const [name, stored] = [...ema.tensors][0];
    const seen = await session.net.params.get(name)!.data();
    assert.deepEqual(Array.from(seen), Array.from(stored.data as Float32Array));
    const model = await session.model.params.get(name)!.data();
    assert.notDeepEqual(Array.from(model), Array.from(seen));
    // Its denoiser is the network's output, and the sampling engine uses it on tfjs.
    const x = tf.randomNormal([2, 8, 8, 3], 0, 1, "float32", 1) as tf.Tensor4D;
    const t = tf.tensor1d([3, 5]);
    const out = await session.denoiser()(x, t) as tf.Tensor;
    const direct = tf.tidy(() => session.net.predict(x, t));
    assert.deepEqual(Array.from(await out.data()), Array.from(await direct.data()));
    const engine = await session.startSampling(checkpoint);
    assert.equal(engine.info.name, "tfjs");
    assert.equal(session.sampling, engine);
    tf.dispose([x, t, out, direct]);
  }
  assert.equal(tf.memory().numTensors, before);
  {
    await using session = await RunSession.open(loaded, {
      purpose: "train",
      dataset: "none",
      workers: false,
    });
    assert.equal(session.dataset, undefined);
    assert.equal(session.size, 8);
    assert.equal(session.checkpoint, null);
    assert.ok(session.optimizer);
    assert.equal(session.workers, undefined);
  }
  assert.equal(tf.memory().numTensors, before);
  {
    await using session = await RunSession.open(loaded, { purpose: "data", cacheDir: TEST_CACHE });
    assert.equal(session.dataset?.count, 24);
    assert.throws(() => session.model, /without its network/);
  }
  assert.equal(tf.memory().numTensors, before);
});
