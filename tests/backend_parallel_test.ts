/**
 * Data-parallel training (src/train/parallel) and gradient accumulation (src/train/step.ts):
 * the same bits on rerun for a given split, and the same training as one thread up to float32
 * rounding.
 * @module
 */
import assert from "node:assert/strict";
import { microBatchRanges, shardRanges } from "../src/train/split.ts";
import { tf } from "../src/tf.ts";
import { initBackend } from "../src/backend/mod.ts";
import { ModelSchema, OptimizerSchema, ScheduleSchema } from "../schemas/experiment.ts";
import { makeSchedule } from "../src/diffusion/schedule.ts";
import { createModel } from "../src/model/mod.ts";
import { deriveRng } from "../src/rng.ts";
import { Adam } from "../src/train/optimizer.ts";
import { GradientWorkers } from "../src/train/parallel/mod.ts";
import { trainStep } from "../src/train/step.ts";

const MODEL = ModelSchema.parse({ width: 8, multipliers: [1, 2] });
const SCHEDULE = makeSchedule(ScheduleSchema.parse({ kind: "linear", timesteps: 50 }));

/** The losses of 3 steps and the final weights, from the same seed. */
async function train(
  options: { workers?: GradientWorkers; microBatch?: number },
): Promise<{ losses: number[]; weights: Float32Array[] }> {
  const model = createModel(MODEL, { rng: deriveRng(0, "model/init") });
  const optimizer = new Adam(model.params, OptimizerSchema.parse({}));
  const n = 6;
  const size = n * 8 * 8 * 3;
  const losses: number[] = [];
  const tensors = tf.memory().numTensors;
  for (let step = 1; step <= 3; step++) {
    const rng = deriveRng(1, `tests/parallel/${step}`);
    const batch = {
      x0: rng.normal(size),
      noise: rng.normal(size),
      steps: Int32Array.from({ length: n }, () => rng.int(50)),
      shape: [8, 8, 3] as [number, number, number],
    };
    losses.push(
      await trainStep(model, batch, {
        schedule: SCHEDULE,
        loss: { kind: "l1" },
        optimizer,
        ...options,
      }),
    );
  }
  assert.equal(tf.memory().numTensors, tensors, "a training step leaked tensors");
  const weights = [...model.params.values()].map((v) => v.dataSync() as Float32Array);
  optimizer.dispose();
  model.dispose();
  return { losses, weights };
}

function assertClose(a: number[], b: number[], tolerance: number, label: string): void {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) {
    assert.ok(Math.abs(a[i] - b[i]) <= tolerance * (1 + Math.abs(b[i])), `${label}: ${a} vs ${b}`);
  }
}

Deno.test("gradient workers and micro-batches train like one thread, with the same bits on rerun", async () => {
  await initBackend("wasm");
  const single = await train({});
  const micro = await train({ microBatch: 4 });
  const microAgain = await train({ microBatch: 4 });
  const workers = await GradientWorkers.start({ count: 2, model: MODEL });
  try {
    assert.equal(workers.size, 2);
    assert.equal(workers.backend, "wasm");
    const parallel = await train({ workers });
    const parallelAgain = await train({ workers, microBatch: 1 });
    const parallelMicro = await train({ workers, microBatch: 1 });
    assert.deepEqual(microAgain, micro);
    assert.deepEqual(parallelMicro, parallelAgain);
    assertClose(micro.losses, single.losses, 1e-5, "micro-batches");
    assertClose(parallel.losses, single.losses, 1e-5, "2 workers");
    assertClose(parallelMicro.losses, single.losses, 1e-5, "2 workers, micro-batches of 1");
    for (const [i, w] of parallel.weights.entries()) {
      const ref = single.weights[i];
      let diff = 0;
      for (let j = 0; j < w.length; j++) diff = Math.max(diff, Math.abs(w[j] - ref[j]));
      assert.ok(diff < 1e-4, `weight ${i}: max diff ${diff}`);
    }
  } finally {
    workers.close();
  }
});

Deno.test("gradient workers reject a model with other parameters", async () => {
  await initBackend("wasm");
  const workers = await GradientWorkers.start({ count: 1, model: MODEL });
  const other = createModel(ModelSchema.parse({ width: 8, multipliers: [1] }), {
    rng: deriveRng(0, "model/init"),
  });
  try {
    assert.throws(() => workers.predict(other.params, []), /parameters differ/);
  } finally {
    other.dispose();
    workers.close();
  }
});

Deno.test("one batch cut for shards and micro-batches", () => {
  assert.deepEqual(shardRanges(10, 3), [[0, 3], [3, 6], [6, 10]]);
  assert.deepEqual(shardRanges(32, 2), [[0, 16], [16, 32]]);
  assert.deepEqual(shardRanges(2, 5), [[0, 1], [1, 2]]); // never an empty shard
  assert.deepEqual(shardRanges(7, 1), [[0, 7]]);
  assert.deepEqual(microBatchRanges(10, 4), [[0, 4], [4, 8], [8, 10]]);
  assert.deepEqual(microBatchRanges(3, 8), [[0, 3]]);
});
