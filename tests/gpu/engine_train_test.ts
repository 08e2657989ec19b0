/**
 * The engine's training step (src/gpu/engine) against the tfjs step (src/train/step.ts
 * `batchGradients` and `trainStep` with Adam, clipping, the lr schedule and the EMA), on the
 * same batch and the same host draws (dropout masks from the same stream):
 * - one step of each option family equals the tfjs step within 1e-4: the loss, every gradient,
 *   the parameters, both Adam moments and the EMA after the update (between them the families
 *   cover eps / x0 / v targets, L1 / L2 / Huber, dropout, clipping, warm-up and cosine decay,
 *   the EMA's start-up copy and decay, and the conditional network with dropped labels);
 * - 20 steps' losses stay within 1e-3 of the tfjs run's;
 * - the same steps from the same state give the same bytes twice.
 */
import assert from "node:assert/strict";
import {
  type LossConfig,
  LossSchema,
  type ModelConfig,
  type OptimizerConfig,
  OptimizerSchema,
  ScheduleSchema,
} from "../../schemas/experiment.ts";
import { initBackend } from "../../src/backend/mod.ts";
import { makeSchedule } from "../../src/diffusion/schedule.ts";
import { GpuEngine } from "../../src/gpu/engine/mod.ts";
import type { NamedArray } from "../../src/io/safetensors.ts";
import { type DenoiseModel, exportParams, withParams } from "../../src/model/mod.ts";
import { deriveRng } from "../../src/rng.ts";
import { tf } from "../../src/tf.ts";
import { Adam, Ema, learningRate } from "../../src/train/mod.ts";
import { batchGradients, type StepBatch, trainStep } from "../../src/train/step.ts";
import { assertClose, gpu, noGpu, testData } from "./device.ts";
import { FAMILIES, familyModel } from "./engine_cases.ts";

await initBackend("cpu");

const SIZE = 8;
const CHANNELS = 3;
const SCHEDULE = makeSchedule(ScheduleSchema.parse({ kind: "linear", timesteps: 50 }));
const TOTAL = 20;

/** What a case varies besides the network. */
interface Case {
  family: string;
  batch: number;
  model?: Partial<ModelConfig>;
  loss: LossConfig;
  optimizer: OptimizerConfig;
}

const CASES: Record<string, Case> = {
  "linear attention: eps, Huber, clipping, EMA": {
    family: "linear attention, full middle, 1 res block",
    batch: 3,
    loss: LossSchema.parse({ kind: "huber", delta: 0.5 }),
    optimizer: OptimizerSchema.parse({ clipGradNorm: 0.5, ema: { decay: 0.9 } }),
  },
  "full attention, 3 res blocks: x0, L1, dropout, no clipping": {
    family: "full attention, linear middle, 3 res blocks",
    batch: 2,
    model: { dropout: 0.3, prediction: "x0" },
    loss: LossSchema.parse({ kind: "l1" }),
    optimizer: OptimizerSchema.parse({ lr: 2e-3 }),
  },
  "no attention: v, L2, warm-up and cosine decay, EMA start-up": {
    family: "no attention, odd widths, 3 levels",
    batch: 3,
    model: { prediction: "v" },
    loss: LossSchema.parse({ kind: "l2" }),
    optimizer: OptimizerSchema.parse({
      warmupSteps: 3,
      lrDecay: "cosine",
      minLr: 1e-4,
      clipGradNorm: 2,
      ema: { decay: 0.95, startStep: 1 },
    }),
  },
  "conditional: eps, L2, dropped labels, clipping": {
    family: "conditional",
    batch: 3,
    loss: LossSchema.parse({ kind: "l2" }),
    optimizer: OptimizerSchema.parse({ clipGradNorm: 1, ema: { decay: 0.9 } }),
  },
};

/** The batch of step k. */
function stepBatch(k: number, batch: number, conditional: boolean): StepBatch {
  const n = batch * SIZE * SIZE * CHANNELS;
  return {
    x0: testData(n, 10 + k),
    noise: deriveRng(3, `noise/${k}`).normal(n),
    steps: new Int32Array([k % 50, (7 * k + 3) % 50, 49]).slice(0, batch),
    shape: [SIZE, SIZE, CHANNELS],
    ...(conditional
      ? {
        condition: {
          labels: new Int32Array([0, 1, 2, 0, 1, 1]).slice(0, 2 * batch),
          drop: new Uint8Array([0, 1, 0]).slice(0, batch),
        },
      }
      : {}),
  };
}

const dropout = (k: number) => ({ seed: 5, stream: `train/dropout/step-${k}` });

/** The tfjs side and the engine of a case, from the same perturbed parameters. */
async function setup(c: Case): Promise<{
  model: DenoiseModel;
  adam: Adam;
  ema: Ema | null;
  engine: GpuEngine;
  params: Map<string, NamedArray>;
}> {
  const { model, params, config } = await familyModel(FAMILIES[c.family], c.model);
  const engine = await GpuEngine.create({
    gpu: gpu!,
    net: model.net,
    image: { size: SIZE, channels: CHANNELS },
    training: {
      batch: c.batch,
      schedule: SCHEDULE,
      loss: c.loss,
      prediction: config.prediction,
      optimizer: c.optimizer,
      totalSteps: TOTAL,
      ring: 8,
    },
  });
  engine.setParams(params);
  const adam = new Adam(model.params, c.optimizer);
  const ema = c.optimizer.ema ? new Ema(model.params, c.optimizer.ema) : null;
  return { model, adam, ema, engine, params };
}

/** One tfjs step (as src/train/mod.ts trainModel runs it); returns the loss. */
async function tfjsStep(
  c: Case,
  parts: { model: DenoiseModel; adam: Adam; ema: Ema | null },
  k: number,
): Promise<number> {
  const batch = stepBatch(k, c.batch, parts.model.net.condition !== undefined);
  const loss = await trainStep(parts.model, batch, {
    schedule: SCHEDULE,
    loss: c.loss,
    prediction: c.model?.prediction,
    optimizer: parts.adam,
    lr: learningRate(k, { ...c.optimizer, totalSteps: TOTAL }),
    clipGradNorm: c.optimizer.clipGradNorm,
    dropout: dropout(k),
  });
  parts.ema?.update(parts.model.params, k);
  return loss;
}

function engineStep(c: Case, engine: GpuEngine, k: number, conditional: boolean): void {
  engine.trainStep(stepBatch(k, c.batch, conditional), { dropout: dropout(k) });
}

function assertSame(
  got: Map<string, NamedArray>,
  want: Map<string, NamedArray>,
  tolerance: number,
  what: string,
): void {
  assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort(), what);
  for (const [name, a] of want) {
    assert.deepEqual(got.get(name)!.shape, a.shape, `${what} ${name}`);
    assertClose(got.get(name)!.data, a.data, tolerance, `${what} ${name}`);
  }
}

for (const [name, c] of Object.entries(CASES)) {
  Deno.test({
    name: `engine train step (${name}) equals the tfjs step within 1e-4`,
    ignore: noGpu,
    fn: async () => {
      const parts = await setup(c);
      const { model, engine } = parts;
      const conditional = model.net.condition !== undefined;
      try {
        // Two steps, so that the second starts from non-zero moments and a moved EMA.
        for (const k of [1, 2]) {
          const batch = stepBatch(k, c.batch, conditional);
          const g = tf.tidy(() =>
            batchGradients(model, batch, {
              schedule: SCHEDULE,
              loss: c.loss,
              prediction: c.model?.prediction,
              dropout: dropout(k),
              weight: 1,
            })
          );
          const want = {
            loss: g.loss.dataSync()[0],
            grads: new Map(
              Object.entries(g.grads).map((
                [n, t],
              ) => [n, { shape: t.shape, data: t.dataSync() as Float32Array }]),
            ),
          };
          tf.dispose([g.loss, ...Object.values(g.grads)]);
          const loss = await tfjsStep(c, parts, k);
          assert.ok(Math.abs(loss - want.loss) < 1e-7);
          engineStep(c, engine, k, conditional);
          const [got] = await engine.readLosses();
          assertClose([got], [loss], 1e-4, `step ${k} loss`);
          assertSame(await engine.gradients(), want.grads, 1e-4, `step ${k} gradient`);
          assertSame(await engine.params(), await exportParams(model), 1e-4, `step ${k} param`);
          const state = await engine.optimizerState();
          const adam = await parts.adam.exportState();
          assert.equal(state.step, adam.step);
          assertSame(state.tensors, adam.tensors, 1e-4, `step ${k} moment`);
          if (parts.ema) {
            assertSame((await engine.ema())!, (await parts.ema.exportState()).tensors, 1e-4, "ema");
          } else assert.equal(await engine.ema(), undefined);
        }
        if (parts.ema) {
          // Sampling with the average: the network of the EMA weights.
          const x = testData(2 * SIZE * SIZE * CHANNELS, 21);
          const condition = conditional
            ? { labels: new Int32Array([1, 0, 2, 1]), drop: new Uint8Array([0, 1]) }
            : undefined;
          const want = tf.tidy(() =>
            withParams(model, parts.ema!.params).predict(
              tf.tensor4d(x, [2, SIZE, SIZE, CHANNELS]),
              tf.tensor1d([3, 30]),
              { condition },
            ).dataSync()
          );
          const got = await engine.predict(x, [3, 30], { condition, weights: "ema" });
          assertClose(got, want, 1e-4, "predict with the EMA");
        }
      } finally {
        engine.destroy();
        parts.adam.dispose();
        parts.ema?.dispose();
        model.dispose();
      }
    },
  });
}

Deno.test({
  name: "engine train step on a smaller batch than the configured one (dropLast false)",
  ignore: noGpu,
  fn: async () => {
    const c = CASES["conditional: eps, L2, dropped labels, clipping"];
    const parts = await setup(c);
    const { model, engine } = parts;
    try {
      const small = { ...c, batch: 2 };
      const loss = await tfjsStep(small, parts, 1);
      engineStep(small, engine, 1, true);
      engineStep(c, engine, 2, true);
      const loss2 = await tfjsStep(c, parts, 2);
      const losses = await engine.readLosses();
      assertClose(losses, [loss, loss2], 1e-4, "losses");
      assertSame(await engine.params(), await exportParams(model), 1e-4, "params");
    } finally {
      engine.destroy();
      parts.adam.dispose();
      parts.ema?.dispose();
      model.dispose();
    }
  },
});

Deno.test({
  name: "engine training: 20 steps' losses within 1e-3 of the tfjs run's, and the same bytes twice",
  ignore: noGpu,
  fn: async () => {
    const c = CASES["no attention: v, L2, warm-up and cosine decay, EMA start-up"];
    const parts = await setup(c);
    const { model, engine, params } = parts;
    try {
      const tfjs: number[] = [];
      const losses: number[] = [];
      for (let k = 1; k <= TOTAL; k++) {
        tfjs.push(await tfjsStep(c, parts, k));
        engineStep(c, engine, k, false);
        // Read as the runner does at logEvery: past the ring's 8 entries, so it wraps.
        if (k % 5 === 0) losses.push(...await engine.readLosses());
      }
      assert.equal(losses.length, TOTAL);
      assertClose(losses, tfjs, 1e-3, "losses");
      assertSame(await engine.params(), await exportParams(model), 1e-3, "params after 20 steps");
      // The same bytes twice: back to the start, the first steps again.
      const bytes = async () => {
        const out: Float32Array[] = [];
        for (const m of [await engine.params(), (await engine.optimizerState()).tensors]) {
          for (const a of m.values()) out.push(a.data);
        }
        out.push(...((await engine.ema())?.values() ?? []).map((a) => a.data));
        return out;
      };
      const again = async () => {
        engine.setParams(params);
        engine.setEma(params);
        engine.setOptimizerState({
          step: 0,
          tensors: new Map(
            [...params].flatMap(([n, a]) => [
              [`${n}.exp_avg`, { shape: a.shape, data: new Float32Array(a.data.length) }],
              [`${n}.exp_avg_sq`, { shape: a.shape, data: new Float32Array(a.data.length) }],
            ]),
          ),
        });
        for (let k = 1; k <= 3; k++) engineStep(c, engine, k, false);
        return { losses: await engine.readLosses(), state: await bytes() };
      };
      const first = await again();
      assert.deepEqual([...first.losses], losses.slice(0, 3));
      const second = await again();
      assert.deepEqual(second.losses, first.losses);
      assert.equal(second.state.length, first.state.length);
      second.state.forEach((a, i) => assert.deepEqual(a, first.state[i], `state array ${i}`));
    } finally {
      engine.destroy();
      parts.adam.dispose();
      parts.ema?.dispose();
      model.dispose();
    }
  },
});
