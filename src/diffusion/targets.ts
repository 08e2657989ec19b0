/**
 * Prediction targets (`model.prediction`): what the network is trained to output and how its
 * output turns back into the noise ε̂ and the clean image x̂_0 the samplers need.
 *
 * With x_t = a x_0 + s ε, a = √ᾱ_t, s = √(1 - ᾱ_t) (so a² + s² = 1):
 * - `eps`: the network predicts ε; x̂_0 = (x_t - s ε̂) / a.
 * - `x0`: the network predicts x_0; ε̂ = (x_t - a x̂_0) / s.
 * - `v` (Salimans & Ho): v = a ε - s x_0; x̂_0 = a x_t - s v̂, ε̂ = s x_t + a v̂.
 *
 * Coefficients are numbers (one t for the whole batch, as in sampling) or [B, 1, 1, 1] tensors
 * (one t per example, as in training). Everything here is a pure tensor function: call it
 * inside tf.tidy.
 * @module
 */
import type { ModelConfig } from "../../schemas/experiment.ts";
import { tf } from "../tf.ts";
import { gatherCoefficients } from "./forward.ts";
import type { Schedule } from "./schedule.ts";

/** What the network predicts. */
export type Prediction = ModelConfig["prediction"];

/** √ᾱ_t and √(1 - ᾱ_t): the signal and noise scales of x_t. */
export interface NoiseLevel {
  /** a = √ᾱ_t. */
  signal: number | tf.Tensor;
  /** s = √(1 - ᾱ_t). */
  noise: number | tf.Tensor;
}

/** The noise level of step index `index` (0-based) as numbers. */
export function noiseLevelAt(schedule: Schedule, index: number): { signal: number; noise: number } {
  const alphaBar = schedule.alphaBars[index];
  return { signal: Math.sqrt(alphaBar), noise: Math.sqrt(1 - alphaBar) };
}

/** Per-example noise levels [B, 1, 1, 1] for 0-based step indices (training). */
export function noiseLevels(
  schedule: Schedule,
  steps: ArrayLike<number>,
): { signal: tf.Tensor4D; noise: tf.Tensor4D } {
  return {
    signal: gatherCoefficients(schedule.alphaBars, steps, Math.sqrt),
    noise: gatherCoefficients(schedule.alphaBars, steps, (v) => Math.sqrt(1 - v)),
  };
}

/**
 * The training target of the network for clean images `x0` noised with `noise`: ε, x_0, or
 * v = √ᾱ_t ε - √(1 - ᾱ_t) x_0. The loss compares the network output with it.
 */
export function trainingTarget(
  x0: tf.Tensor4D,
  noise: tf.Tensor4D,
  options: { prediction: Prediction; level: NoiseLevel },
): tf.Tensor4D {
  const { prediction, level } = options;
  if (prediction === "eps") return noise;
  if (prediction === "x0") return x0;
  return tf.sub(tf.mul(noise, level.signal), tf.mul(x0, level.noise));
}

/** ε̂ and x̂_0 of a network output. */
export interface Denoised {
  /** The predicted noise ε̂. */
  eps: tf.Tensor4D;
  /** The predicted clean image x̂_0. */
  x0: tf.Tensor4D;
}

/**
 * Turns the network output at x_t into ε̂ and x̂_0. With `clipX0`, x̂_0 is clipped to [-1, 1]
 * and ε̂ recomputed from the clipped x̂_0, so that both stay consistent with x_t.
 */
export function interpretOutput(
  output: tf.Tensor4D,
  xt: tf.Tensor4D,
  options: { prediction: Prediction; level: NoiseLevel; clipX0?: boolean },
): Denoised {
  const { prediction, level } = options;
  let eps: tf.Tensor4D;
  let x0: tf.Tensor4D;
  if (prediction === "eps") {
    eps = output;
    x0 = tf.div(tf.sub(xt, tf.mul(output, level.noise)), level.signal);
  } else if (prediction === "x0") {
    x0 = output;
    eps = tf.div(tf.sub(xt, tf.mul(output, level.signal)), level.noise);
  } else {
    x0 = tf.sub(tf.mul(xt, level.signal), tf.mul(output, level.noise));
    eps = tf.add(tf.mul(xt, level.noise), tf.mul(output, level.signal));
  }
  if (!options.clipX0) return { eps, x0 };
  const clipped = tf.clipByValue(x0, -1, 1);
  return {
    x0: clipped,
    eps: tf.div(tf.sub(xt, tf.mul(clipped, level.signal)), level.noise),
  };
}
