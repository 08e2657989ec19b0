/**
 * One optimizer step of DDPM training (Algorithm 1, lines 2-5) on a prepared batch: the hot
 * path of training, kept apart from the loop so that it can be optimised on its own.
 *
 * The gradients of a batch can be computed in pieces, summed in a fixed order (so results are
 * deterministic for a given split):
 * - `microBatch`: at most this many examples per forward/backward pass (gradient
 *   accumulation), which bounds the activation memory;
 * - `workers` ({@link GradientWorkers}): data parallelism, the batch split into `1 + size`
 *   shards, shard 0 on this thread and the others each in a worker with its own wasm instance.
 *
 * Every piece's loss is its mean times its share of the batch, so the sum is the batch mean.
 * Without workers and micro-batches the step computes exactly what it always did.
 * @module
 */
import { variableGradsLowMemory } from "../backend/tape.ts";
import { qSample } from "../diffusion/forward.ts";
import { noiseLevels, trainingTarget } from "../diffusion/targets.ts";
import { deriveRng } from "../rng.ts";
import { clipByGlobalNorm } from "./clip.ts";
import type { DenoiseModel } from "../model/mod.ts";
import { tf } from "../tf.ts";
import { microBatchRanges, shardRanges, sliceCondition } from "./split.ts";
import { lossValue } from "./loss.ts";
import type { Adam } from "./optimizer.ts";
import type { GradientWorkers } from "./parallel/mod.ts";
import type { GradientTask, StepBatch } from "./parallel/protocol.ts";

export type { GradientTask, StepBatch } from "./parallel/protocol.ts";

/** What a step needs besides its batch. */
export interface StepOptions extends GradientTask {
  /** Optimizer holding the state to update. */
  optimizer: Adam;
  /** This step's learning rate (absent: the optimizer's). */
  lr?: number;
  /** Clip the gradients to this global norm before the update (absent: no clipping). */
  clipGradNorm?: number;
  /** Data-parallel gradient workers (src/train/parallel); none: all on this thread. */
  workers?: GradientWorkers;
  /** At most this many examples per forward/backward pass (gradient accumulation). */
  microBatch?: number;
}

/** Examples `from` (inclusive) to `to` (exclusive) of `batch`, sharing its memory. */
export function sliceBatch(batch: StepBatch, from: number, to: number): StepBatch {
  const size = batch.shape[0] * batch.shape[1] * batch.shape[2];
  return {
    x0: batch.x0.subarray(from * size, to * size),
    noise: batch.noise.subarray(from * size, to * size),
    steps: batch.steps.subarray(from, to),
    shape: batch.shape,
    offset: (batch.offset ?? 0) + from,
    ...(batch.condition
      ? { condition: sliceCondition(batch.condition, { from, to, rows: batch.steps.length }) }
      : {}),
  };
}

/**
 * The loss of `batch` (its mean times `weight`) and its gradients by parameter name. Call
 * inside tf.tidy.
 */
export function batchGradients(
  model: DenoiseModel,
  batch: StepBatch,
  options: GradientTask & { weight: number },
): { loss: tf.Scalar; grads: Record<string, tf.Tensor> } {
  const n = batch.steps.length;
  const vars = [...model.params.values()];
  const names = new Map<string, string>();
  for (const [name, v] of model.params) names.set(v.name, name);
  const dims: [number, number, number, number] = [n, ...batch.shape];
  const x0 = tf.tensor4d(batch.x0, dims);
  const noise = tf.tensor4d(batch.noise, dims);
  const xt = qSample(x0, noise, { schedule: options.schedule, steps: batch.steps });
  const t = tf.tensor1d(Float32Array.from(batch.steps));
  const prediction = options.prediction ?? "eps";
  const target = prediction === "eps"
    ? noise
    : trainingTarget(x0, noise, { prediction, level: noiseLevels(options.schedule, batch.steps) });
  const dropoutRng = options.dropout
    ? deriveRng(options.dropout.seed, `${options.dropout.stream}/from-${batch.offset ?? 0}`)
    : undefined;
  const { value, grads } = variableGradsLowMemory(() => {
    const loss = lossValue(
      model.predict(xt, t, { dropoutRng, condition: batch.condition }),
      target,
      options.loss,
    );
    return options.weight === 1 ? loss : tf.mul(loss, options.weight);
  }, vars);
  const byName: Record<string, tf.Tensor> = {};
  for (const [vname, g] of Object.entries(grads)) byName[names.get(vname)!] = g;
  return { loss: value, grads: byName };
}

/**
 * The gradients of `batch` as the sum over micro-batches of at most `microBatch` examples, each
 * loss weighted by its share of `total` examples (the whole step's batch). Call inside tf.tidy.
 */
export function accumulateGradients(
  model: DenoiseModel,
  batch: StepBatch,
  options: GradientTask & { total: number; microBatch?: number },
): { loss: tf.Scalar; grads: Record<string, tf.Tensor> } {
  const n = batch.steps.length;
  let loss: tf.Scalar | undefined;
  let grads: Record<string, tf.Tensor> | undefined;
  for (const [from, to] of microBatchRanges(n, options.microBatch ?? n)) {
    const part = tf.tidy(() =>
      batchGradients(model, sliceBatch(batch, from, to), {
        ...options,
        weight: (to - from) === options.total ? 1 : (to - from) / options.total,
      })
    );
    if (loss === undefined || grads === undefined) {
      loss = part.loss;
      grads = part.grads;
      continue;
    }
    const sum = tf.tidy(() => {
      const g: Record<string, tf.Tensor> = {};
      for (const name in grads) g[name] = tf.add(grads![name], part.grads[name]);
      return { loss: tf.add(loss!, part.loss) as tf.Scalar, grads: g };
    });
    tf.dispose([loss, part.loss, ...Object.values(grads), ...Object.values(part.grads)]);
    loss = sum.loss;
    grads = sum.grads;
  }
  if (loss === undefined || grads === undefined) throw new Error("empty batch");
  return { loss, grads };
}

/** One training step on a batch; returns the loss. Memory is flat: everything runs in tf.tidy. */
export async function trainStep(
  model: DenoiseModel,
  inputs: StepBatch,
  options: StepOptions,
): Promise<number> {
  const n = inputs.steps.length;
  const task: GradientTask = {
    schedule: options.schedule,
    loss: options.loss,
    prediction: options.prediction,
    dropout: options.dropout,
  };
  const workers = options.workers;
  const [[, localEnd], ...shards] = shardRanges(n, 1 + (workers?.size ?? 0));
  // The workers start first (they get the weights before this step changes them) and run
  // while this thread computes shard 0.
  const remote = shards.length > 0 && workers !== undefined
    ? workers.gradients(
      model.params,
      shards.map(([from, to]) => ({
        batch: sliceBatch(inputs, from, to),
        task,
        total: n,
        microBatch: options.microBatch,
      })),
    )
    : Promise.resolve([]);
  const local = tf.tidy(() =>
    accumulateGradients(model, sliceBatch(inputs, 0, localEnd), {
      ...task,
      total: n,
      microBatch: options.microBatch,
    })
  );
  let results: Awaited<typeof remote>;
  try {
    results = await remote;
  } catch (e) {
    tf.dispose([local.loss, ...Object.values(local.grads)]);
    throw e;
  }
  let loss = (await local.loss.data())[0];
  for (const r of results) loss = Math.fround(loss + r.loss);
  tf.tidy(() => {
    let grads = local.grads;
    if (results.length > 0) {
      grads = {};
      for (const name in local.grads) {
        let g = local.grads[name];
        for (const r of results) g = tf.add(g, tf.tensor(r.grads.get(name)!, g.shape));
        grads[name] = g;
      }
    }
    if (options.clipGradNorm !== undefined) {
      grads = clipByGlobalNorm(grads, options.clipGradNorm).grads;
    }
    options.optimizer.apply(model.params, grads, { lr: options.lr });
  });
  tf.dispose([local.loss, ...Object.values(local.grads)]);
  return loss;
}
