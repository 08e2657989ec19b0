/**
 * Classifier-free guidance (Ho & Salimans, 2022) as a denoiser wrapper: the sampling loop does
 * not know about labels, it sees one more denoiser.
 *
 * Convention: ε̃ = (1 + w)·ε(x, c) − w·ε(x, ∅), so w = 0 is the conditional model alone and
 * w > 0 pushes away from the unconditional prediction. diffusers' `guidance_scale` is s = 1 + w
 * (ε̃ = ε(x, ∅) + s·(ε(x, c) − ε(x, ∅))). The same mix applies to x_0 or v outputs.
 * @module
 */
import { tf } from "../tf.ts";
import type { Denoiser, DenoiserOutput } from "./sampler.ts";

/**
 * (1 + w)·conditional − w·unconditional, element-wise, in float32 (the formula a test checks
 * by hand). Call inside tf.tidy.
 */
export function guidanceMix(
  outputs: { conditional: tf.Tensor; unconditional: tf.Tensor },
  w: number,
): tf.Tensor {
  const c = guidanceWeights(w);
  return tf.sub(
    tf.mul(outputs.conditional, c.conditional),
    tf.mul(outputs.unconditional, c.unconditional),
  );
}

/** The weights of {@link guidanceMix}: conditional 1 + w, unconditional w (subtracted). */
export function guidanceWeights(w: number): { conditional: number; unconditional: number } {
  return { conditional: 1 + w, unconditional: w };
}

function asTensor(out: DenoiserOutput, like: tf.Tensor4D): tf.Tensor4D {
  return out instanceof Float32Array ? tf.tensor4d(out, like.shape) : out;
}

/**
 * The guided denoiser: calls `pair.conditional` and `pair.unconditional` (the same network
 * with the requested labels and with the null label) and mixes them with weight `w`. With
 * w = 0 it is `pair.conditional` itself (no second evaluation).
 */
export function guidedDenoiser(
  pair: { conditional: Denoiser; unconditional: Denoiser },
  w: number,
): Denoiser {
  if (w === 0) return pair.conditional;
  return async (x, t) => {
    const conditional = asTensor(await pair.conditional(x, t), x);
    const unconditional = asTensor(await pair.unconditional(x, t), x);
    const out = tf.tidy(() => guidanceMix({ conditional, unconditional }, w) as tf.Tensor4D);
    tf.dispose([conditional, unconditional]);
    return out;
  };
}
