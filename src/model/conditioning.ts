/**
 * The conditioning path of a conditional U-Net (seed 004): labels -> encoding (one-hot or raw
 * integers) -> the projection "tau" (linear layers, GELU between) -> `tokens` label tokens, or
 * the learned null embedding for examples whose labels are dropped (classifier-free guidance).
 * The tokens enter the U-Net through a linear projection added to the time embedding and/or
 * multi-head cross-attention blocks (image features attend to the tokens).
 *
 * Like ./unet.ts, this file loads no TensorFlow.js: modules declare their parameters in their
 * constructors and get the ops from the forward context. The encoding is a pure function.
 * @module
 */
import type { ParamInit, ParamScope } from "./params.ts";
import type { ForwardContext } from "./layer_ops.ts";

/** How labels enter the network: the resolved `model.conditioning` plus each attribute's size. */
export interface ConditionShape {
  /** Number of values of each conditioned attribute, in order. */
  sizes: number[];
  /** `onehot`: concatenated one-hot vectors; `integer`: one raw index per attribute. */
  encoding: "onehot" | "integer";
  /** Linear layers of tau. */
  layers: number;
  /** Width of each token (and of tau's hidden layers). */
  width: number;
  /** Tokens tau outputs. */
  tokens: number;
  /** Whether a projection of the embedding is added to the time embedding. */
  time: boolean;
  /** Cross-attention blocks: at which levels, in the middle or not, heads x dimHead. */
  crossAttention?: {
    levels: "all" | number[];
    middle: boolean;
    heads: number;
    dimHead: number;
  };
}

/**
 * What a conditional forward pass reads: the labels of each example, row-major [B, A], and
 * which examples use the null embedding instead (1: dropped). Plain arrays, so that gradient
 * workers receive them by structured clone.
 */
export interface ConditionInput {
  /** `labels[i * A + a]`: the value of attribute a for example i. */
  labels: Int32Array;
  /** `drop[i] = 1`: example i gets the null embedding (its labels are ignored). */
  drop?: Uint8Array;
}

/** Width of the encoded labels: the sum of the sizes (one-hot) or the number of attributes. */
export function encodedWidth(shape: Pick<ConditionShape, "sizes" | "encoding">): number {
  return shape.encoding === "onehot" ? shape.sizes.reduce((a, b) => a + b, 0) : shape.sizes.length;
}

/**
 * Encodes row-major labels [B, A]: one-hot (attribute a's value v sets column
 * offset_a + v, offset_a the sum of the sizes before a) or the raw indices as floats. Throws
 * on a label outside [0, size).
 */
export function encodeLabels(
  labels: Int32Array,
  shape: Pick<ConditionShape, "sizes" | "encoding">,
): Float32Array {
  const { sizes } = shape;
  const a = sizes.length;
  if (labels.length % a !== 0) {
    throw new RangeError(`${labels.length} labels are not a whole number of rows of ${a}`);
  }
  const rows = labels.length / a;
  const width = encodedWidth(shape);
  const out = new Float32Array(rows * width);
  for (let i = 0; i < rows; i++) {
    let offset = 0;
    for (let j = 0; j < a; j++) {
      const v = labels[i * a + j];
      if (!(v >= 0 && v < sizes[j])) {
        throw new RangeError(`label ${v} of attribute ${j} is outside [0, ${sizes[j]})`);
      }
      if (shape.encoding === "onehot") out[i * width + offset + v] = 1;
      else out[i * width + j] = v;
      offset += sizes[j];
    }
  }
  return out;
}

const uniform = (fanIn: number): ParamInit => ({ kind: "uniform", fanIn });

/**
 * The projection tau: `layers` nn.Linear (`tau.0`, `tau.2`, ... as in an nn.Sequential with a
 * GELU between layers), encoded labels -> tokens x width; plus `null_embedding` [tokens x width]
 * (zeros at init, learned), which replaces tau's output for dropped examples.
 */
export class Tau {
  readonly #layers: string[];
  readonly #null: string;

  constructor(scope: ParamScope, shape: ConditionShape) {
    const out = shape.tokens * shape.width;
    let cin = encodedWidth(shape);
    this.#layers = Array.from({ length: shape.layers }, (_, i) => {
      const cout = i === shape.layers - 1 ? out : shape.width;
      const layer = scope.at(`tau.${2 * i}`);
      layer.declare("weight", [cin, cout], uniform(cin));
      layer.declare("bias", [cout], uniform(cin));
      cin = cout;
      return layer.prefix;
    });
    this.#null = scope.declare("null_embedding", [out], { kind: "zeros" });
  }

  /**
   * The label embedding [B, tokens x width] of `ctx.condition`; without labels the null
   * embedding for each example of `x`.
   */
  forward<T>(x: T, ctx: ForwardContext<T>): T {
    const L = ctx.ops;
    const cond = ctx.condition;
    if (!cond) return L.nullTokens(this.#null, x);
    let h = cond.labels;
    this.#layers.forEach((prefix, i) => {
      if (i > 0) h = L.gelu(h);
      h = L.linear(h, prefix);
    });
    // Always mixed (h·1 + null·0 = h exactly), so that every parameter has a gradient.
    return L.nullMix(h, this.#null, cond.drop);
  }
}

/**
 * Residual multi-head cross-attention: x + to_out(softmax(q kᵀ / √dimHead) v), q a 1x1 conv
 * of GroupNorm(1, C)(x), k and v bias-free linears of the label tokens.
 */
export class CrossAttention {
  readonly #prefix: string;
  readonly #heads: number;
  readonly #dimHead: number;
  readonly #width: number;

  constructor(
    scope: ParamScope,
    dim: number,
    options: { width: number; heads: number; dimHead: number },
  ) {
    const { width, heads, dimHead } = options;
    const hidden = heads * dimHead;
    this.#prefix = scope.prefix;
    this.#heads = heads;
    this.#dimHead = dimHead;
    this.#width = width;
    scope.declare("norm.weight", [dim], { kind: "ones" });
    scope.declare("norm.bias", [dim], { kind: "zeros" });
    scope.declare("to_q.weight", [1, 1, dim, hidden], uniform(dim));
    scope.declare("to_k.weight", [width, hidden], uniform(width));
    scope.declare("to_v.weight", [width, hidden], uniform(width));
    scope.declare("to_out.weight", [1, 1, hidden, dim], uniform(hidden));
    scope.declare("to_out.bias", [dim], uniform(hidden));
  }

  /** x [B, H, W, C] attending to the tokens `context` [B, tokens x width]. */
  forward<T>(x: T, context: T, ctx: ForwardContext<T>): T {
    const L = ctx.ops;
    const prefix = this.#prefix;
    const normed = L.groupNorm(x, `${prefix}.norm`, 1);
    const merged = L.crossAttention(normed, context, prefix, {
      heads: this.#heads,
      dimHead: this.#dimHead,
      width: this.#width,
    });
    return L.add(x, L.conv(merged, `${prefix}.to_out`, { bias: true }));
  }
}
