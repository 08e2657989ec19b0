/**
 * The compiled engine (src/gpu/engine) against tfjs, one network per option family (linear /
 * full / no attention at the levels and in the middle, 1 and 3 residual blocks, the
 * conditional network with tau, the time projection, cross-attention and the null mix):
 * - `predict` equals the tfjs model's `predict` within 1e-4 (a batch larger than the sampling
 *   plan's, run in pieces; a smaller one; a conditional network without labels);
 * - two training steps equal the tfjs steps (src/train/step.ts with Adam, clipping, the lr
 *   schedule and the EMA, the same host draws) within 1e-4: the loss, every gradient, the
 *   parameters, both Adam moments and the EMA after each update. Between them the cases cover
 *   eps / x0 / v targets, L1 / L2 / Huber, dropout, clipping, warm-up and cosine decay, the
 *   EMA's start-up copy and decay, and dropped labels;
 * - `predict` with the EMA weights equals the tfjs network of the EMA.
 * - over many steps, on a one-level network: 20 steps' losses within 1e-3 of the tfjs run's
 *   (read every 5 steps, past the ring of 8); the same steps from the same state give the same
 *   bytes twice; `trainModel` through the engine (`asTrainEngine`, with a smaller last batch,
 *   dropout and tfjs micro-batches whose masks come from generators of their own) gives the tfjs run's losses and, synced into the tfjs objects, its
 *   parameters, moments and EMA; a sampling-only engine predicts in pieces and cannot train.
 * One file, so that the engines share their pipelines (llvmpipe compiles each in ~0.1 s).
 * Adam's ε is 1e-6 in the cases: an element whose gradient is near ε moves by a fraction of
 * lr that float32 rounding of the gradient changes, which at ε = 1e-8 can pass 1e-4.
 */
import assert from "node:assert/strict";
import { LossSchema, OptimizerSchema, TrainSchema } from "../../schemas/experiment.ts";
import { initBackend } from "../../src/backend/mod.ts";
import { asTrainEngine, GpuEngine } from "../../src/gpu/engine/mod.ts";
import { exportParams, withParams } from "../../src/model/mod.ts";
import { trainModel } from "../../src/train/mod.ts";
import { tf } from "../../src/tf.ts";
import { batchGradients } from "../../src/train/step.ts";
import { assertClose, gpu, noGpu, testData } from "./device.ts";
import {
  assertSame,
  type Case,
  CHANNELS,
  dropout,
  engineStep,
  FAMILIES,
  familyModel,
  labelsOf,
  SCHEDULE,
  sides,
  SIZE,
  stepBatch,
  tfjsStep,
  TOTAL,
} from "./engine_cases.ts";

await initBackend("cpu");

const CASES: Record<string, Case> = {
  "eps, Huber, clipping, EMA": {
    family: "linear attention, full middle, 1 res block",
    batch: 3,
    loss: LossSchema.parse({ kind: "huber", delta: 0.5 }),
    optimizer: OptimizerSchema.parse({ epsilon: 1e-6, clipGradNorm: 0.5, ema: { decay: 0.9 } }),
  },
  "x0, L1, dropout, no clipping": {
    family: "full attention at level 1, linear middle, 3 res blocks",
    batch: 3,
    model: { dropout: 0.3, prediction: "x0" },
    loss: LossSchema.parse({ kind: "l1" }),
    optimizer: OptimizerSchema.parse({ epsilon: 1e-6, lr: 2e-3 }),
  },
  "v, L2, warm-up and cosine decay, EMA start-up": {
    family: "no attention, none in the middle",
    batch: 3,
    model: { prediction: "v" },
    loss: LossSchema.parse({ kind: "l2" }),
    optimizer: OptimizerSchema.parse({
      epsilon: 1e-6,
      warmupSteps: 3,
      lrDecay: "cosine",
      minLr: 1e-4,
      clipGradNorm: 2,
      ema: { decay: 0.95, startStep: 1 },
    }),
  },
  "eps, L2, dropped labels, clipping, EMA": {
    family: "conditional",
    batch: 3,
    loss: LossSchema.parse({ kind: "l2" }),
    optimizer: OptimizerSchema.parse({ epsilon: 1e-6, clipGradNorm: 1, ema: { decay: 0.9 } }),
  },
};

/** tfjs `predict` of `n` examples as a plain array. */
function tfjsPredict(
  model: Parameters<typeof withParams>[0],
  x: Float32Array,
  t: number[],
  condition?: { labels: Int32Array; drop: Uint8Array },
): Float32Array {
  return tf.tidy(() =>
    model.predict(tf.tensor4d(x, [t.length, SIZE, SIZE, CHANNELS]), tf.tensor1d(t), {
      condition,
    }).dataSync() as Float32Array
  );
}

for (const [name, c] of Object.entries(CASES)) {
  Deno.test({
    name: `engine (${c.family}; ${name}): predict and two training steps equal tfjs within 1e-4`,
    ignore: noGpu,
    fn: async () => {
      const s = await sides(c);
      const { model } = s;
      const engine = s.engine!;
      const conditional = model.net.condition !== undefined;
      try {
        const back = await engine.params();
        for (const [k, a] of s.params) assert.deepEqual(back.get(k)!.data, a.data, k);
        // Sampling: 5 examples (two pieces of the sample batch of 3), then 2.
        for (const n of [5, 2]) {
          const x = testData(n * SIZE * SIZE * CHANNELS, 7 + n);
          const t = [1, 40, 7, 49, 0].slice(0, n);
          const condition = conditional ? labelsOf(n) : undefined;
          const got = await engine.predict(x, t, { condition });
          assertClose(got, tfjsPredict(model, x, t, condition), 1e-4, `predict ${n}`);
          if (conditional) {
            // Without labels: the null embedding for every example.
            const uncond = await engine.predict(x, t);
            assertClose(uncond, tfjsPredict(model, x, t), 1e-4, `unconditional ${n}`);
          }
        }
        // Training: two steps, so that the second starts from moved moments and EMA.
        for (const k of [1, 2]) {
          const g = tf.tidy(() =>
            batchGradients(model, stepBatch(k, c.batch, conditional), {
              schedule: SCHEDULE,
              loss: c.loss,
              prediction: c.model?.prediction,
              dropout: dropout(k),
              weight: 1,
            })
          );
          const wantLoss = g.loss.dataSync()[0];
          const wantGrads = new Map(
            Object.entries(g.grads).map((
              [n, t],
            ) => [n, { shape: t.shape, data: t.dataSync() as Float32Array }]),
          );
          tf.dispose([g.loss, ...Object.values(g.grads)]);
          const loss = await tfjsStep(c, s, k);
          assert.ok(Math.abs(loss - wantLoss) < 1e-7);
          engineStep(c, s, k);
          const losses = await engine.readLosses();
          assertClose(losses, [loss], 1e-4, `step ${k} loss`);
          assertSame(await engine.gradients(), wantGrads, 1e-4, `step ${k} gradient`);
          assertSame(await engine.params(), await exportParams(model), 1e-4, `step ${k} param`);
          const state = await engine.optimizerState();
          const adam = await s.adam.exportState();
          assert.equal(state.step, adam.step);
          assertSame(state.tensors, adam.tensors, 1e-4, `step ${k} moment`);
          if (s.ema) {
            assertSame((await engine.ema())!, (await s.ema.exportState()).tensors, 1e-4, "ema");
          } else assert.equal(await engine.ema(), undefined);
        }
        if (s.ema) {
          // Sampling with the average: the tfjs network of the EMA weights.
          const x = testData(2 * SIZE * SIZE * CHANNELS, 21);
          const condition = conditional ? labelsOf(2) : undefined;
          const got = await engine.predict(x, [3, 30], { condition, weights: "ema" });
          const want = tfjsPredict(withParams(model, s.ema.params), x, [3, 30], condition);
          assertClose(got, want, 1e-4, "predict with the EMA");
        }
      } finally {
        s.dispose();
      }
    },
  });
}

const CASE: Case = {
  family: "minimal",
  batch: 3,
  model: { dropout: 0.2 },
  loss: LossSchema.parse({ kind: "l1" }),
  optimizer: OptimizerSchema.parse({
    epsilon: 1e-6,
    warmupSteps: 2,
    clipGradNorm: 1,
    ema: { decay: 0.9 },
  }),
};

Deno.test({
  name: "engine: 20 steps' losses within 1e-3 of tfjs, and the same bytes twice",
  ignore: noGpu,
  fn: async () => {
    const s = await sides(CASE);
    const engine = s.engine!;
    try {
      const tfjs: number[] = [];
      const losses: number[] = [];
      for (let k = 1; k <= TOTAL; k++) {
        tfjs.push(await tfjsStep(CASE, s, k));
        engineStep(CASE, s, k);
        if (k % 5 === 0) losses.push(...await engine.readLosses());
      }
      assertClose(losses, tfjs, 1e-3, "losses");
      assertSame(await engine.params(), await exportParams(s.model), 1e-3, "params");
      const again = async () => {
        engine.setParams(s.params);
        engine.setEma(s.params);
        const zeros = [...s.params].flatMap(([n, a]) =>
          [".exp_avg", ".exp_avg_sq"].map((suffix) =>
            [n + suffix, { shape: a.shape, data: new Float32Array(a.data.length) }] as const
          )
        );
        engine.setOptimizerState({ step: 0, tensors: new Map(zeros) });
        for (let k = 1; k <= 3; k++) engineStep(CASE, s, k);
        const state = [
          ...(await engine.params()).values(),
          ...(await engine.optimizerState()).tensors.values(),
          ...(await engine.ema())!.values(),
        ].map((a) => a.data);
        return { losses: await engine.readLosses(), state };
      };
      const first = await again();
      assert.deepEqual([...first.losses], losses.slice(0, 3));
      const second = await again();
      assert.deepEqual(second.losses, first.losses);
      assert.equal(second.state.length, first.state.length);
      second.state.forEach((a, i) => assert.deepEqual(a, first.state[i], `state array ${i}`));
    } finally {
      s.dispose();
    }
  },
});

Deno.test({
  name: "trainModel through asTrainEngine equals trainModel on tfjs (losses, synced state)",
  ignore: noGpu,
  fn: async () => {
    // 8 images in batches of 3 without dropLast: each epoch's third step has 2.
    // Micro-batches of 2: tfjs draws each one's dropout masks from its own generator.
    const train = TrainSchema.parse({
      epochs: 2,
      batchSize: 3,
      dropLast: false,
      logEvery: 2,
      microBatch: 2,
    });
    const per = SIZE * SIZE * CHANNELS;
    const images = testData(8 * per, 31);
    const data = {
      count: 8,
      shape: [SIZE, SIZE, CHANNELS] as [number, number, number],
      flip: true,
      batch: (indices: Int32Array, flips: Uint8Array) => {
        const out = new Float32Array(indices.length * per);
        indices.forEach((i, j) => {
          const img = images.subarray(i * per, (i + 1) * per);
          out.set(flips[j] ? img.map((v) => -v) : img, j * per);
        });
        return out;
      },
    };
    const run = async (useEngine: boolean) => {
      const s = await sides(CASE, useEngine);
      const records: number[] = [];
      try {
        await trainModel(s.model, {
          seed: 4,
          schedule: SCHEDULE,
          loss: CASE.loss,
          train,
          optimizer: s.adam,
          data,
          model: { prediction: "eps", dropout: 0.2 },
          optimizerConfig: CASE.optimizer,
          ema: s.ema,
          ...(s.engine ? { engine: asTrainEngine(s.engine, { microBatch: 2 }) } : {}),
          onStep: (r) => {
            records.push(r.loss);
          },
        });
        return {
          records,
          params: await exportParams(s.model),
          moments: (await s.adam.exportState()).tensors,
          ema: (await s.ema!.exportState()).tensors,
        };
      } finally {
        s.dispose();
      }
    };
    const tfjs = await run(false);
    const engine = await run(true);
    assert.equal(engine.records.length, 6);
    assertClose(engine.records, tfjs.records, 1e-4, "losses");
    assertSame(engine.params, tfjs.params, 1e-4, "synced params");
    assertSame(engine.moments, tfjs.moments, 1e-4, "synced moments");
    assertSame(engine.ema, tfjs.ema, 1e-4, "synced ema");
  },
});

Deno.test({
  name: "a sampling-only engine: predict in pieces equals tfjs; it refuses to train",
  ignore: noGpu,
  fn: async () => {
    const { model, params } = await familyModel(FAMILIES.minimal);
    try {
      await using engine = await GpuEngine.create({
        gpu: gpu!,
        net: model.net,
        image: { size: SIZE, channels: CHANNELS },
        sampleBatch: 2,
      });
      assert.equal(engine.dispatchCount, 0);
      engine.setParams(params);
      const x = testData(3 * SIZE * SIZE * CHANNELS, 41);
      assertClose(await engine.predict(x, 17), tfjsPredict(model, x, [17, 17, 17]), 1e-4, "x");
      assert.throws(() => engine.trainStep(stepBatch(1, 2, false)), /cannot train/);
      await assert.rejects(() => engine.readLosses(), /no losses/);
    } finally {
      model.dispose();
    }
  },
});
