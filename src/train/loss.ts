/**
 * The `loss` section: the distance between the network output and its target (ε, x_0 or v,
 * as `model.prediction` says; see src/diffusion/targets.ts).
 * @module
 */
import type { LossConfig } from "../../schemas/experiment.ts";
import { tf } from "../tf.ts";

/**
 * Elementwise Huber loss of d: 0.5 d² where |d| <= delta, else delta (|d| - 0.5 delta)
 * (PyTorch's `huber_loss`; at delta 1 also its `smooth_l1_loss`).
 */
export function huber(d: tf.Tensor, options: { delta: number }): tf.Tensor {
  const { delta } = options;
  const a = tf.abs(d);
  const quadratic = tf.minimum(a, delta);
  // 0.5 q² + delta (|d| - q): q = |d| inside the quadratic zone, q = delta outside it.
  return tf.add(tf.mul(tf.square(quadratic), 0.5), tf.mul(tf.sub(a, quadratic), delta));
}

/**
 * Mean loss of `prediction` against `target`: l1 mean |d| (the notebook's), l2 mean d² (the
 * paper's), huber mean {@link huber}(d).
 */
export function lossValue(
  prediction: tf.Tensor,
  target: tf.Tensor,
  config: LossConfig,
): tf.Scalar {
  const d = tf.sub(prediction, target);
  switch (config.kind) {
    case "l1":
      return tf.mean(tf.abs(d));
    case "l2":
      return tf.mean(tf.square(d));
    case "huber":
      return tf.mean(huber(d, { delta: config.delta }));
  }
}
