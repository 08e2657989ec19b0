/**
 * The `optimizer` section: Adam with PyTorch's update rule, its state held as plain named
 * tensors so that checkpoints can save and restore it exactly.
 * @module
 */
import type { OptimizerConfig } from "../../schemas/experiment.ts";
import type { NamedArray } from "../io/safetensors.ts";
import { tf, variableFrom } from "../tf.ts";

/** Adam (Kingma & Ba) over named variables, bias-corrected as torch.optim.Adam. */
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
    const { beta1, beta2, epsilon } = this.#config;
    const lr = options.lr ?? this.#config.lr;
    this.#step++;
    const bc1 = 1 - beta1 ** this.#step;
    const bc2 = 1 - beta2 ** this.#step;
    tf.tidy(() => {
      for (const [name, p] of params) {
        const g = grads[name];
        if (!g) continue;
        const m = this.#m.get(name)!;
        const v = this.#v.get(name)!;
        const m1 = tf.add(tf.mul(m, beta1), tf.mul(g, 1 - beta1));
        const v1 = tf.add(tf.mul(v, beta2), tf.mul(tf.square(g), 1 - beta2));
        m.assign(m1);
        v.assign(v1);
        const denom = tf.add(tf.div(tf.sqrt(v1), Math.sqrt(bc2)), epsilon);
        p.assign(tf.sub(p, tf.mul(tf.div(m1, denom), lr / bc1)));
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
