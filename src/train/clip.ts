/**
 * Gradient clipping by global norm (`optimizer.clipGradNorm`), as
 * `torch.nn.utils.clip_grad_norm_`: every gradient is scaled by
 * min(1, maxNorm / (‖g‖ + 1e-6)), ‖g‖ the L2 norm of all gradients together.
 * @module
 */
import { tf } from "../tf.ts";

/**
 * The global L2 norm of `grads` and the gradients scaled to at most `maxNorm` (the same
 * tensors' values when the norm is below it). Pure tensor maths: call it inside tf.tidy.
 */
export function clipByGlobalNorm(
  grads: Record<string, tf.Tensor>,
  maxNorm: number,
): { grads: Record<string, tf.Tensor>; norm: tf.Scalar } {
  const names = Object.keys(grads);
  const squares = names.map((name) => tf.sum(tf.square(grads[name])));
  const norm = tf.sqrt(squares.length === 0 ? tf.scalar(0) : tf.addN(squares)) as tf.Scalar;
  const scale = tf.minimum(tf.div(maxNorm, tf.add(norm, 1e-6)), 1);
  const out: Record<string, tf.Tensor> = {};
  for (const name of names) out[name] = tf.mul(grads[name], scale);
  return { grads: out, norm };
}
