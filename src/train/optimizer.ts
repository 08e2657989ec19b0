/**
 * The `optimizer` section: Adam with PyTorch's update rule, its state held as plain named
 * tensors so that checkpoints can save and restore it exactly.
 * @module
 */
import type { OptimizerConfig } from "../../schemas/experiment.ts";
import type { NamedArray } from "../io/safetensors.ts";
import { tf, variableFrom } from "../tf.ts";

/**
 * The scalars of Adam's update at optimizer step `step` (1-based), in float64 (the update rounds
 * each to float32): m' = b1 m + c1 g, v' = b2 v + c2 g², p' = p - stepSize · m' / (√v' / sqrtBc2
 * + eps). The one place these numbers are computed, for {@link Adam} and the WebGPU engine.
 */
export interface AdamConstants {
  /** β1. */
  b1: number;
  /** 1 - β1. */
  c1: number;
  /** β2. */
  b2: number;
  /** 1 - β2. */
  c2: number;
  /** √(1 - β2^k). */
  sqrtBc2: number;
  /** ε. */
  eps: number;
  /** lr / (1 - β1^k). */
  stepSize: number;
}

/** The keys of {@link AdamConstants} in the order the update uses them. */
export const ADAM_CONSTANTS = [
  "b1",
  "c1",
  "b2",
  "c2",
  "sqrtBc2",
  "eps",
  "stepSize",
] as const satisfies readonly (keyof AdamConstants)[];

/** Adam's scalars for step `step` (1-based) with learning rate `options.lr`. */
export function adamConstants(
  step: number,
  options: Pick<OptimizerConfig, "beta1" | "beta2" | "epsilon" | "lr">,
): AdamConstants {
  const { beta1, beta2, epsilon, lr } = options;
  const bc1 = 1 - beta1 ** step;
  const bc2 = 1 - beta2 ** step;
  return {
    b1: beta1,
    c1: 1 - beta1,
    b2: beta2,
    c2: 1 - beta2,
    sqrtBc2: Math.sqrt(bc2),
    eps: epsilon,
    stepSize: lr / bc1,
  };
}

/**
 * Adam (Kingma & Ba) over named variables, bias-corrected as torch.optim.Adam.
 *
 * The step's constants are uploaded once per step as scalar tensors, not once per parameter
 * (a JavaScript number in an op is a new scalar tensor: 7 per parameter, 2,051 per step for the
 * course U-Net, each an upload on WebGPU). The bits are those of the plain form. A flat form (all
 * moments in one buffer) cut WebGPU's kernels further but made wasm's update 9x slower: its
 * Slice copies the whole buffer for every parameter (bench/RESULTS.md).
 */
export class Adam {
  #config: OptimizerConfig;
  #m = new Map<string, tf.Variable>();
  #v = new Map<string, tf.Variable>();
  #step = 0;

  /** Creates zeroed moments for every variable in `params`. */
  constructor(params: Map<string, tf.Variable>, config: OptimizerConfig) {
    this.#config = config;
    for (const [name, p] of params) {
      this.#m.set(name, variableFrom(tf.zerosLike(p), false));
      this.#v.set(name, variableFrom(tf.zerosLike(p), false));
    }
  }

  /** Number of updates applied so far. */
  get step(): number {
    return this.#step;
  }

  /**
   * Applies one update p -= lr / (1 - β1^k) · m / (√v / √(1 - β2^k) + ε) with gradients by
   * parameter name; `options.lr` is this step's learning rate (default: the configured one).
   * Runs its own tf.tidy.
   */
  apply(
    params: Map<string, tf.Variable>,
    grads: Record<string, tf.Tensor>,
    options: { lr?: number } = {},
  ): void {
    const lr = options.lr ?? this.#config.lr;
    this.#step++;
    const constants = adamConstants(this.#step, { ...this.#config, lr });
    tf.tidy(() => {
      const [b1, c1, b2, c2, sqrtBc2, eps, stepSize] = ADAM_CONSTANTS.map((key) =>
        tf.scalar(constants[key])
      );
      for (const [name, p] of params) {
        const g = grads[name];
        if (!g) continue;
        const m = this.#m.get(name)!;
        const v = this.#v.get(name)!;
        const m1 = tf.add(tf.mul(m, b1), tf.mul(g, c1));
        const v1 = tf.add(tf.mul(v, b2), tf.mul(tf.square(g), c2));
        m.assign(m1);
        v.assign(v1);
        const denom = tf.add(tf.div(tf.sqrt(v1), sqrtBc2), eps);
        p.assign(tf.sub(p, tf.mul(tf.div(m1, denom), stepSize)));
      }
    });
  }

  /** The state: moments named `<param>.exp_avg` / `<param>.exp_avg_sq` (as PyTorch) and the step. */
  async exportState(): Promise<{ step: number; tensors: Map<string, NamedArray> }> {
    const tensors = new Map<string, NamedArray>();
    for (const [name, m] of this.#m) {
      tensors.set(`${name}.exp_avg`, {
        shape: [...m.shape],
        data: (await m.data()) as Float32Array,
      });
      const v = this.#v.get(name)!;
      tensors.set(`${name}.exp_avg_sq`, {
        shape: [...v.shape],
        data: (await v.data()) as Float32Array,
      });
    }
    return { step: this.#step, tensors };
  }

  /** Restores a state written by {@link Adam.exportState}. */
  importState(state: { step: number; tensors: Map<string, NamedArray> }): void {
    for (const [name, m] of this.#m) {
      for (
        const [suffix, variable] of [["exp_avg", m], ["exp_avg_sq", this.#v.get(name)!]] as const
      ) {
        const a = state.tensors.get(`${name}.${suffix}`);
        if (!a) throw new Error(`optimizer state has no ${name}.${suffix}`);
        variable.assign(tf.tensor(a.data, a.shape));
      }
    }
    this.#step = state.step;
  }

  /** Frees the moments. */
  dispose(): void {
    this.#m.forEach((t) => t.dispose());
    this.#v.forEach((t) => t.dispose());
  }
}
