/**
 * The `loss` section: the distance between the network output and its target.
 * @module
 */
import type { LossConfig } from "../../schemas/experiment.ts";
import { tf } from "../tf.ts";

/** Mean loss of `prediction` against `target` (l1: mean |d|, the notebook's; l2: mean d², the paper's). */
export function lossValue(
  prediction: tf.Tensor,
  target: tf.Tensor,
  config: LossConfig,
): tf.Scalar {
  const d = tf.sub(prediction, target);
  return config.kind === "l1" ? tf.mean(tf.abs(d)) : tf.mean(tf.square(d));
}
