/**
 * One optimizer step of DDPM training (Algorithm 1, lines 2-5) on a prepared batch: the hot
 * path of training, kept apart from the loop so that it can be optimised on its own.
 * @module
 */
import type { LossConfig } from "../../schemas/experiment.ts";
import { qSample } from "../diffusion/forward.ts";
import type { Schedule } from "../diffusion/schedule.ts";
import type { DenoiseModel } from "../model/mod.ts";
import { tf } from "../tf.ts";
import { lossValue } from "./loss.ts";
import type { Adam } from "./optimizer.ts";

/** What a step needs besides its batch. */
export interface StepOptions {
  /** Noise schedule. */
  schedule: Schedule;
  /** Loss section. */
  loss: LossConfig;
  /** Optimizer holding the state to update. */
  optimizer: Adam;
}

/** One training step on a batch; returns the loss. Memory is flat: everything runs in tf.tidy. */
export async function trainStep(
  model: DenoiseModel,
  inputs: {
    x0: Float32Array;
    noise: Float32Array;
    steps: Int32Array;
    shape: [number, number, number];
  },
  options: StepOptions,
): Promise<number> {
  const n = inputs.steps.length;
  const vars = [...model.params.values()];
  const names = new Map<string, string>();
  for (const [name, v] of model.params) names.set(v.name, name);
  const lossTensor = tf.tidy(() => {
    const dims: [number, number, number, number] = [n, ...inputs.shape];
    const x0 = tf.tensor4d(inputs.x0, dims);
    const noise = tf.tensor4d(inputs.noise, dims);
    const xt = qSample(x0, noise, { schedule: options.schedule, steps: inputs.steps });
    const t = tf.tensor1d(Float32Array.from(inputs.steps));
    const { value, grads } = tf.variableGrads(
      () => lossValue(model.predict(xt, t), noise, options.loss),
      vars,
    );
    const byName: Record<string, tf.Tensor> = {};
    for (const [vname, g] of Object.entries(grads)) byName[names.get(vname)!] = g;
    options.optimizer.apply(model.params, byName);
    return value;
  });
  const value = (await lossTensor.data())[0];
  lossTensor.dispose();
  return value;
}
