/**
 * The forward process q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I), sampled in closed form.
 * @module
 */
import { tf } from "../tf.ts";
import type { Schedule } from "./schedule.ts";

/** Per-example coefficients [B, 1, 1, 1] gathered from a float64 table at integer steps. */
export function gatherCoefficients(
  table: ArrayLike<number>,
  steps: ArrayLike<number>,
  map: (v: number) => number = (v) => v,
): tf.Tensor4D {
  const out = new Float32Array(steps.length);
  for (let i = 0; i < steps.length; i++) out[i] = map(table[steps[i]]);
  return tf.tensor4d(out, [steps.length, 1, 1, 1]);
}

/** x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε for per-example steps (0-based); use inside tf.tidy. */
export function qSample(
  x0: tf.Tensor4D,
  noise: tf.Tensor4D,
  options: { schedule: Schedule; steps: ArrayLike<number> },
): tf.Tensor4D {
  const { schedule, steps } = options;
  const a = gatherCoefficients(schedule.alphaBars, steps, Math.sqrt);
  const s = gatherCoefficients(schedule.alphaBars, steps, (v) => Math.sqrt(1 - v));
  return tf.add(tf.mul(a, x0), tf.mul(s, noise));
}
