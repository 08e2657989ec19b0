/**
 * The single import point of TensorFlow.js. `@tensorflow/tfjs` (not tfjs-core) is imported so
 * that gradients and chained ops are registered; backends are set up in `src/backend`.
 * @module
 */
import * as tf from "@tensorflow/tfjs";

// Production mode: no debug checks and no "install tfjs-node" banner on the cpu backend.
tf.enableProdMode();

export { tf };

/**
 * A variable holding `initial`'s values; `initial` is disposed (the variable keeps its own
 * reference to the data), so making a variable leaves no stray tensor behind.
 */
export function variableFrom(initial: tf.Tensor, trainable = true): tf.Variable {
  const v = tf.variable(initial, trainable);
  initial.dispose();
  return v;
}
