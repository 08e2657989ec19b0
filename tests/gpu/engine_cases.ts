/**
 * The small networks of the engine tests (one per option family), the tfjs models they are
 * compared with (the same parameters, perturbed from PyTorch's initialisation so that the
 * group norms' affine, the null embedding and every bias matter), and the two sides of a
 * training step: the tfjs step of src/train and the engine's, on the same batch and draws.
 * @module
 */
import {
  type LossConfig,
  type ModelConfig,
  ModelSchema,
  type OptimizerConfig,
  ScheduleSchema,
} from "../../schemas/experiment.ts";
import assert from "node:assert/strict";
import { makeSchedule } from "../../src/diffusion/schedule.ts";
import { GpuEngine } from "../../src/gpu/engine/mod.ts";
import type { NamedArray } from "../../src/io/safetensors.ts";
import { createModel, type DenoiseModel, exportParams, importParams } from "../../src/model/mod.ts";
import { deriveRng } from "../../src/rng.ts";
import { Adam, Ema, learningRate } from "../../src/train/mod.ts";
import { type StepBatch, trainStep } from "../../src/train/step.ts";
import { assertClose, gpu, testData } from "./device.ts";

/** Image side and channels of every case. */
export const SIZE = 8;
/** Image channels. */
export const CHANNELS = 3;
/** The schedule of every case (T = 50). */
export const SCHEDULE = makeSchedule(ScheduleSchema.parse({ kind: "linear", timesteps: 50 }));
/** Steps of a run (where the cosine decay ends). */
export const TOTAL = 20;
/** The attribute sizes of the conditional family. */
export const LABEL_SIZES = [3, 2];

/**
 * 8x8 images, width 8 at two levels: each option family of the schema. The families share
 * their widths, groups and heads, so most kernels (shapes baked in) are shared, and an engine's
 * pipelines are made once per device for every engine of a test file.
 */
export const FAMILIES: Record<string, unknown> = {
  "linear attention, full middle, 1 res block": {
    width: 8,
    multipliers: [1, 2],
    resBlocks: 1,
    attention: { heads: 2, dimHead: 4 },
  },
  "full attention at level 1, linear middle, 3 res blocks": {
    width: 8,
    multipliers: [1, 2],
    resBlocks: 3,
    attention: { kind: "full", levels: [1], heads: 2, dimHead: 4 },
    middleAttention: "linear",
  },
  "no attention, none in the middle": {
    width: 8,
    multipliers: [1, 2],
    resBlocks: 1,
    attention: { kind: "none" },
    middleAttention: "none",
  },
  conditional: {
    width: 8,
    multipliers: [1, 2],
    resBlocks: 1,
    attention: { kind: "none" },
    middleAttention: "full",
    conditioning: {
      attributes: ["hair", "glasses"],
      layers: 2,
      width: 6,
      tokens: 3,
      time: true,
      crossAttention: { levels: [1], middle: true, heads: 2, dimHead: 4 },
    },
  },
  // The loops' network: one level.
  minimal: {
    width: 8,
    multipliers: [1],
    resBlocks: 1,
    attention: { kind: "none" },
    middleAttention: "none",
  },
};

/** What a case varies besides the network. */
export interface Case {
  /** Key of {@link FAMILIES}. */
  family: string;
  /** Examples per step. */
  batch: number;
  /** Model options on top of the family (dropout, prediction). */
  model?: Partial<ModelConfig>;
  /** The loss section. */
  loss: LossConfig;
  /** The optimizer section. */
  optimizer: OptimizerConfig;
}

/** The model of a family with perturbed parameters, and those parameters. */
export async function familyModel(
  body: unknown,
  overrides: Partial<ModelConfig> = {},
): Promise<{ model: DenoiseModel; params: Map<string, NamedArray>; config: ModelConfig }> {
  const config = ModelSchema.parse({ ...(body as object), ...overrides });
  const labelSizes = config.conditioning ? LABEL_SIZES : undefined;
  const model = createModel(config, { rng: deriveRng(1, "model/init"), labelSizes });
  const params = await exportParams(model);
  const rng = deriveRng(2, "test/perturb");
  for (const [name, a] of params) {
    const data = Float32Array.from(a.data);
    for (let i = 0; i < data.length; i++) data[i] += 0.2 * (rng.uniform() - 0.5);
    params.set(name, { shape: a.shape, data });
  }
  importParams(model, params);
  return { model, params, config };
}

/** The labels and drops of `n` examples of the conditional family. */
export function labelsOf(n: number): { labels: Int32Array; drop: Uint8Array } {
  const labels = new Int32Array(2 * n);
  const drop = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    labels[2 * i] = i % 3;
    labels[2 * i + 1] = (i * 5 + 1) % 2;
    drop[i] = i % 3 === 1 ? 1 : 0;
  }
  return { labels, drop };
}

/** The batch of step k. */
export function stepBatch(k: number, batch: number, conditional: boolean): StepBatch {
  const n = batch * SIZE * SIZE * CHANNELS;
  return {
    x0: testData(n, 10 + k),
    noise: deriveRng(3, `noise/${k}`).normal(n),
    steps: Int32Array.from({ length: batch }, (_, i) => [k % 50, (7 * k + 3) % 50, 49][i % 3]),
    shape: [SIZE, SIZE, CHANNELS],
    ...(conditional ? { condition: labelsOf(batch) } : {}),
  };
}

/** The dropout stream of step k (as src/train/mod.ts names it). */
export const dropout = (k: number): { seed: number; stream: string } => ({
  seed: 5,
  stream: `train/dropout/step-${k}`,
});

/** The two sides of a case. */
export interface Sides {
  /** The tfjs model. */
  model: DenoiseModel;
  /** Its optimizer. */
  adam: Adam;
  /** Its EMA. */
  ema: Ema | null;
  /** The engine (absent when not asked for). */
  engine?: GpuEngine;
  /** The starting parameters. */
  params: Map<string, NamedArray>;
  /** Frees both sides. */
  dispose(): void;
}

/** The tfjs side and (with `withEngine`) the engine of a case, from the same parameters. */
export async function sides(c: Case, withEngine = true): Promise<Sides> {
  const { model, params, config } = await familyModel(FAMILIES[c.family], c.model);
  const adam = new Adam(model.params, c.optimizer);
  const ema = c.optimizer.ema ? new Ema(model.params, c.optimizer.ema) : null;
  const engine = withEngine
    ? await GpuEngine.create({
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
    })
    : undefined;
  engine?.setParams(params);
  return {
    model,
    adam,
    ema,
    engine,
    params,
    dispose: () => {
      engine?.destroy();
      adam.dispose();
      ema?.dispose();
      model.dispose();
    },
  };
}

/** One tfjs step (as src/train/mod.ts trainModel runs it); returns the loss. */
export async function tfjsStep(c: Case, s: Sides, k: number): Promise<number> {
  const batch = stepBatch(k, c.batch, s.model.net.condition !== undefined);
  const loss = await trainStep(s.model, batch, {
    schedule: SCHEDULE,
    loss: c.loss,
    prediction: c.model?.prediction,
    optimizer: s.adam,
    lr: learningRate(k, { ...c.optimizer, totalSteps: TOTAL }),
    clipGradNorm: c.optimizer.clipGradNorm,
    dropout: dropout(k),
  });
  s.ema?.update(s.model.params, k);
  return loss;
}

/** The engine's step k of the case (the learning rate from the engine's own schedule). */
export function engineStep(c: Case, s: Sides, k: number): void {
  const conditional = s.model.net.condition !== undefined;
  s.engine!.trainStep(stepBatch(k, c.batch, conditional), { dropout: dropout(k) });
}

/** Asserts two named sets of arrays have the same names, shapes and values within `tolerance`. */
export function assertSame(
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
