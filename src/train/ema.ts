/**
 * `optimizer.ema`: an exponential moving average of the weights, the weights DDPM samples with
 * (Ho et al. use decay 0.9999). After optimizer step k (1-based):
 * ema = weights while k <= startStep, else ema = d · ema + (1 - d) · weights with
 * d = min(decay, (1 + j) / (10 + j)), j = k - startStep - 1: the warm-up of diffusers'
 * `EMAModel`, without which a short run with decay 0.9999 samples with nearly its initial
 * random weights.
 * @module
 */
import type { EmaConfig } from "../../schemas/experiment.ts";
import type { NamedArray } from "../io/safetensors.ts";
import { tf, variableFrom } from "../tf.ts";

/** The decay applied after optimizer step `step` (1-based): min(decay, (1 + j) / (10 + j)). */
export function emaDecay(step: number, config: EmaConfig): number {
  const j = Math.max(0, step - config.startStep - 1);
  return Math.min(config.decay, (1 + j) / (10 + j));
}

/** The moving average of a set of named variables (e.g. `DenoiseModel.params`). */
export class Ema {
  #config: EmaConfig;
  #shadow = new Map<string, tf.Variable>();
  #step = 0;

  /** Starts the average as a copy of `params`. */
  constructor(params: Map<string, tf.Variable>, config: EmaConfig) {
    this.#config = config;
    for (const [name, p] of params) this.#shadow.set(name, variableFrom(p.clone(), false));
  }

  /** The averaged weights by name (same names and shapes as the params; see `withParams`). */
  get params(): Map<string, tf.Variable> {
    return this.#shadow;
  }

  /** The optimizer step of the last update. */
  get step(): number {
    return this.#step;
  }

  /** Updates the average after optimizer step `step` (1-based). Runs its own tf.tidy. */
  update(params: Map<string, tf.Variable>, step: number): void {
    const { decay, startStep } = this.#config;
    this.#step = step;
    tf.tidy(() => {
      for (const [name, shadow] of this.#shadow) {
        const p = params.get(name);
        if (!p) throw new Error(`ema: no parameter named ${name}`);
        if (step <= startStep) shadow.assign(p);
        else {
          const d = emaDecay(step, { decay, startStep });
          shadow.assign(tf.add(tf.mul(shadow, d), tf.mul(p, 1 - d)));
        }
      }
    });
  }

  /** The averaged weights as arrays by parameter name, and the step (for checkpoints). */
  async exportState(): Promise<{ step: number; tensors: Map<string, NamedArray> }> {
    const tensors = new Map<string, NamedArray>();
    for (const [name, v] of this.#shadow) {
      tensors.set(name, { shape: [...v.shape], data: (await v.data()) as Float32Array });
    }
    return { step: this.#step, tensors };
  }

  /** Restores a state written by {@link Ema.exportState}; every parameter must be present. */
  importState(state: { step: number; tensors: Map<string, NamedArray> }): void {
    for (const [name, v] of this.#shadow) {
      const a = state.tensors.get(name);
      if (!a) throw new Error(`ema state has no ${name}`);
      if (a.shape.join("x") !== v.shape.join("x")) {
        throw new Error(`ema state ${name} has shape [${a.shape}], expected [${v.shape}]`);
      }
      tf.tidy(() => v.assign(tf.tensor(a.data, a.shape)));
    }
    this.#step = state.step;
  }

  /** Frees the averaged weights. */
  dispose(): void {
    this.#shadow.forEach((v) => v.dispose());
  }
}
