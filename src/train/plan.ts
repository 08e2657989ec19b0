/**
 * The plan of a training run, without TensorFlow.js: how many steps a `train` section implies,
 * and which images (and flips) each step of an epoch takes, from the epoch's named streams.
 * @module
 */
import type { TrainConfig } from "../../schemas/experiment.ts";
import { deriveRng } from "../rng.ts";

/** The number of steps a `train` section implies for `count` images. */
export function plannedSteps(
  count: number,
  config: TrainConfig,
): { perEpoch: number; total: number } {
  const perEpoch = config.dropLast
    ? Math.floor(count / config.batchSize)
    : Math.ceil(count / config.batchSize);
  const total = Math.min(perEpoch * config.epochs, config.maxSteps ?? Infinity);
  return { perEpoch, total };
}

/** The images of each step of an epoch, and their flips, from the epoch's generators. */
export function epochPlan(
  count: number,
  options: { seed: number; epoch: number; train: TrainConfig; flip: boolean | number },
): { order: Int32Array; flips: Uint8Array } {
  const { seed, epoch, train } = options;
  const order = train.shuffle
    ? deriveRng(seed, `data/order/epoch-${epoch}`).permutation(count)
    : Int32Array.from({ length: count }, (_, i) => i);
  const flips = new Uint8Array(count);
  const p = options.flip === true ? 0.5 : options.flip === false ? 0 : options.flip;
  if (p > 0) {
    const rng = deriveRng(seed, `data/flip/epoch-${epoch}`);
    for (let i = 0; i < count; i++) flips[i] = rng.uniform() < p ? 1 : 0;
  }
  return { order, flips };
}
