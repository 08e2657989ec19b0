/**
 * The single import point of TensorFlow.js. `@tensorflow/tfjs` (not tfjs-core) is imported so
 * that gradients and chained ops are registered; backends are set up in `src/backend`.
 * @module
 */
import * as tf from "@tensorflow/tfjs";

// Production mode: no debug checks and no "install tfjs-node" banner on the cpu backend.
tf.enableProdMode();

export { tf };
