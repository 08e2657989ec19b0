/**
 * Neutral ops: the operations of the U-Net that a backend may run as one fused kernel. The
 * layers call them; the composed tfjs version runs unless a backend registered a fused
 * implementation (src/backend registers its wasm kernels here), so the model never imports the
 * backend. A fused implementation returns undefined where it does not apply (another backend is
 * active) and must compute the same function, gradient included.
 * @module
 */
import type { tf } from "../tf.ts";
import type { AttentionOptions } from "./layer_ops.ts";

/** Fused implementations a backend may register. */
export interface FusedOps {
  /** GroupNorm of x [B, H, W, C] with affine `gamma`, `beta` [C] (eps 1e-5). */
  groupNorm?(
    x: tf.Tensor4D,
    affine: { gamma: tf.Tensor; beta: tf.Tensor },
    options: { groups: number },
  ): tf.Tensor4D | undefined;
  /**
   * The merged heads [B, H, W, heads · dimHead] of linear attention for the normalised x and
   * the `to_qkv` weight w (before `to_out`).
   */
  linearAttention?(
    x: tf.Tensor4D,
    w: tf.Tensor4D,
    options: AttentionOptions,
  ): tf.Tensor4D | undefined;
}

const registered: FusedOps = {};

/** Registers fused implementations (a backend calls it when it starts); later ones win. */
export function registerFusedOps(ops: FusedOps): void {
  Object.assign(registered, ops);
}

/** The fused implementations registered so far. */
export function fusedOps(): Readonly<FusedOps> {
  return registered;
}
