/**
 * The conditioning path of a conditional U-Net (src/model/conditioning.ts) as ONNX nodes: the
 * projection tau of the encoded labels, mixed with the learned null embedding by a per-example
 * mask, and the residual cross-attention blocks that attend to its tokens.
 *
 * The graph takes the labels already encoded (`condition` [batch, E], one-hot or raw indices as
 * floats, as `encodeLabels` writes them) and `uncond` [batch] (1: the null embedding, 0: the
 * labels), so that one session serves the conditional and the unconditional halves of
 * classifier-free guidance.
 * @module
 */
import type { ModelConfig } from "../../schemas/experiment.ts";
import { encodedWidth } from "../model/conditioning.ts";
import {
  add,
  conv,
  gelu,
  groupNorm,
  type LayerContext,
  linear,
  mergeHeads,
  splitHeads,
  type Value,
} from "./layers.ts";

/** `model.conditioning` of a conditional config. */
export type Conditioning = NonNullable<ModelConfig["conditioning"]>;

/** Width of the encoded labels (`encodedWidth`), after checking there is a size per attribute. */
export function encodedLabelWidth(conditioning: Conditioning, labelSizes: number[]): number {
  if (labelSizes.length !== conditioning.attributes.length) {
    throw new Error(
      `onnx export: model.conditioning has ${conditioning.attributes.length} attributes, ` +
        `${labelSizes.length} label sizes were given`,
    );
  }
  return encodedWidth({ sizes: labelSizes, encoding: conditioning.encoding });
}

/**
 * The label embedding [B, tokens x width]: tau (`tau.0`, GELU, `tau.2`, ...) of `inputs.labels`
 * where `inputs.uncond` is 0, `null_embedding` where it is 1, computed as
 * tau·(1 − m) + null·m like the tfjs forward (so both are exact for m in {0, 1}).
 */
export function labelEmbedding(
  ctx: LayerContext,
  inputs: { labels: string; uncond: string },
  options: { conditioning: Conditioning; encodedWidth: number },
): string {
  const { g } = ctx;
  const { layers, tokens, width } = options.conditioning;
  const out = tokens * width;
  let h = inputs.labels;
  let cin = options.encodedWidth;
  for (let i = 0; i < layers; i++) {
    if (i > 0) h = gelu(g, h, `tau.${2 * i - 1}`);
    const cout = i === layers - 1 ? out : width;
    h = linear(ctx, h, { prefix: `tau.${2 * i}`, dims: [cin, cout] });
    cin = cout;
  }
  const nullEmb = g.float("null_embedding", ctx.weights.get("null_embedding", [out]).data, [
    1,
    out,
  ]);
  const m = g.node("Unsqueeze", [inputs.uncond, g.int64("uncond.axes", [1])], {
    name: "uncond.column",
  });
  const keep = g.node("Sub", [g.float("uncond.one", Float32Array.of(1), []), m], {
    name: "uncond.keep",
  });
  return g.node("Add", [
    g.node("Mul", [h, keep], { name: "label_embedding.kept" }),
    g.node("Mul", [nullEmb, m], { name: "label_embedding.null" }),
  ], { name: "label_embedding" });
}

/**
 * Declares the graph inputs `condition` [batch, E] and `uncond` [batch] of a conditional model
 * and returns its label embedding. Throws without `labelSizes` or when they do not match
 * `conditioning.attributes`.
 */
export function conditionInputs(
  ctx: LayerContext,
  conditioning: Conditioning,
  labelSizes: number[] | undefined,
): string {
  if (!labelSizes) {
    throw new Error("onnx export: a conditional model needs the label sizes (labelSizes)");
  }
  const width = encodedLabelWidth(conditioning, labelSizes);
  const inputs = {
    labels: ctx.g.input("condition", ["batch", width]),
    uncond: ctx.g.input("uncond", ["batch"]),
  };
  return labelEmbedding(ctx, inputs, { conditioning, encodedWidth: width });
}

/**
 * `x` followed by a cross-attention block when `conditioning.crossAttention` puts one at
 * `level` (a level index, or "mid" for the middle), else `x` itself.
 */
export function crossAttentionAt(
  ctx: LayerContext,
  x: Value,
  options: { conditioning: Conditioning; labels: string; prefix: string; level: number | "mid" },
): Value {
  const { conditioning: c, level } = options;
  const cross = c.crossAttention;
  const here = cross &&
    (level === "mid" ? cross.middle : cross.levels === "all" || cross.levels.includes(level));
  if (!here) return x;
  return crossAttention(ctx, x, {
    prefix: options.prefix,
    context: options.labels,
    tokens: c.tokens,
    width: c.width,
    heads: cross.heads,
    dimHead: cross.dimHead,
  });
}

/** Options of {@link crossAttention}. */
export interface CrossAttentionOptions {
  /** State-dict prefix (`cross_attn.downs.0`, `cross_attn.mid`, ...). */
  prefix: string;
  /** The label embedding [B, tokens x width]. */
  context: string;
  /** Tokens and their width. */
  tokens: number;
  width: number;
  /** Heads and the width of each. */
  heads: number;
  dimHead: number;
}

/**
 * x + to_out(softmax(q kᵀ / √dimHead) v): q a bias-free 1x1 conv of GroupNorm(1, C)(x) (the
 * scale folded into its weights), k and v bias-free linears of the tokens.
 */
export function crossAttention(ctx: LayerContext, x: Value, options: CrossAttentionOptions): Value {
  const { g } = ctx;
  const { prefix, tokens, width, heads, dimHead } = options;
  const hidden = heads * dimHead;
  const scale = dimHead ** -0.5;
  const normed = groupNorm(ctx, x, `${prefix}.norm`, 1);
  const q = conv(ctx, normed, `${prefix}.to_q`, {
    k: 1,
    cout: hidden,
    bias: false,
    mapWeight: (w) => w.map((v) => v * scale),
  });
  const qT = g.node("Transpose", [splitHeads(g, q, { heads, dimHead, prefix: `${prefix}.q` })], {
    name: `${prefix}.q.t`,
    attributes: { perm: [0, 1, 3, 2] },
  }); // [B, h, n, e]
  const rows = g.node("Reshape", [options.context, g.int64(`${prefix}.tokens`, [-1, width])], {
    name: `${prefix}.tokens`,
  }); // [B * tokens, width]
  const project = (name: "to_k" | "to_v", perm: number[]): string => {
    const w = ctx.weights.get(`${prefix}.${name}.weight`, [width, hidden]);
    const y = g.node(
      "MatMul",
      [rows, g.float(`${prefix}.${name}.weight`, w.data, [width, hidden])],
      {
        name: `${prefix}.${name}`,
      },
    );
    const split = g.node("Reshape", [
      y,
      g.int64(`${prefix}.${name}.shape`, [-1, tokens, heads, dimHead]),
    ], { name: `${prefix}.${name}.split` });
    return g.node("Transpose", [split], { name: `${prefix}.${name}.t`, attributes: { perm } });
  };
  const k = project("to_k", [0, 2, 3, 1]); // [B, h, e, tokens]
  const v = project("to_v", [0, 2, 1, 3]); // [B, h, tokens, e]
  const sim = g.node("MatMul", [qT, k], { name: `${prefix}.sim` }); // [B, h, n, tokens]
  const attn = g.node("Softmax", [sim], { name: `${prefix}.attn`, attributes: { axis: 3 } });
  const out = g.node("MatMul", [attn, v], { name: `${prefix}.out` }); // [B, h, n, e]
  const outT = g.node("Transpose", [out], {
    name: `${prefix}.out.t`,
    attributes: { perm: [0, 1, 3, 2] },
  });
  const merged = mergeHeads(g, outT, { heads, dimHead, size: x.size, prefix });
  return add(g, x, conv(ctx, merged, `${prefix}.to_out`, { k: 1, cout: x.channels }), prefix);
}
