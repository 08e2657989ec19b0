/**
 * The forward pass of the course U-Net (../shared/reference/unet.md) over its plan (./plan.ts).
 * The defaults (2 residual blocks per level, linear attention at every level, full attention in
 * the middle, no dropout) are exactly the reference network.
 * @module
 */
import type { Rng } from "../rng.ts";
import { tf } from "../tf.ts";
import {
  attention,
  conv,
  dropout,
  gelu,
  groupNorm,
  linear,
  linearAttention,
  type ParamLookup,
  pixelUnshuffle,
  silu,
  sinusoidalEmbedding,
  upsampleNearest2x,
} from "./layers.ts";
import type { AttentionBlock, AttentionOptions, ResBlock, UnetPlan } from "./plan.ts";

function resBlock(
  x: tf.Tensor4D,
  temb: tf.Tensor2D,
  p: ParamLookup,
  rb: ResBlock & { groups: number; dropout: number; rng?: Rng },
): tf.Tensor4D {
  const ss = linear(silu(temb), p, `${rb.prefix}.mlp.1`);
  const [scale, shift] = tf.split(tf.reshape(ss, [-1, 1, 1, 2 * rb.dimOut]), 2, 3);
  let h = groupNorm(
    conv(x, p, `${rb.prefix}.block1.proj`),
    p,
    `${rb.prefix}.block1.norm`,
    rb.groups,
  );
  h = silu(tf.add(tf.mul(h, tf.add(scale, 1)), shift));
  if (rb.rng && rb.dropout > 0) h = dropout(h, { rate: rb.dropout, rng: rb.rng });
  h = silu(
    groupNorm(conv(h, p, `${rb.prefix}.block2.proj`), p, `${rb.prefix}.block2.norm`, rb.groups),
  );
  const res = rb.dimIn === rb.dimOut ? x : conv(x, p, `${rb.prefix}.res_conv`);
  return tf.add(h, res);
}

/** x + Attention(GroupNorm(1, C)(x)) for a planned block (identity when there is none). */
function attend(
  x: tf.Tensor4D,
  p: ParamLookup,
  block: AttentionBlock | null,
  options: AttentionOptions,
): tf.Tensor4D {
  if (!block) return x;
  const a = block.prefix;
  const normed = groupNorm(x, p, `${a}.fn.norm`, 1);
  const fn = block.kind === "linear" ? linearAttention : attention;
  return tf.add(x, fn(normed, p, `${a}.fn.fn`, options));
}

/**
 * The forward pass: the network output for `x` [B, H, W, C] at float timesteps `t` [B].
 * With `dropoutRng` (training) the residual blocks apply dropout, masks drawn in forward order
 * from that generator; without it (sampling) dropout is off. Call it inside `tf.tidy`.
 */
export function unetForward(
  plan: UnetPlan,
  p: ParamLookup,
  inputs: { x: tf.Tensor4D; t: tf.Tensor1D; dropoutRng?: Rng },
): tf.Tensor4D {
  const common = {
    groups: plan.shape.groups,
    dropout: plan.dropout,
    rng: inputs.dropoutRng,
  };
  const attn = plan.attentionOptions;
  let x = conv(inputs.x, p, "init_conv");
  const r = x;
  const emb = sinusoidalEmbedding(inputs.t, plan.shape.width);
  const temb = linear(gelu(linear(emb, p, "time_mlp.1")), p, "time_mlp.3");
  const skips: tf.Tensor4D[] = [];
  for (const level of plan.downs) {
    level.blocks.forEach((block, j) => {
      x = resBlock(x, temb, p, { ...block, ...common });
      if (j === level.blocks.length - 1) x = attend(x, p, level.attention, attn);
      skips.push(x);
    });
    x = level.change.kind === "conv"
      ? conv(x, p, level.change.prefix)
      : conv(pixelUnshuffle(x), p, level.change.prefix);
  }
  const m = plan.midDim;
  x = resBlock(x, temb, p, { prefix: "mid_block1", dimIn: m, dimOut: m, ...common });
  x = attend(x, p, plan.midAttention, attn);
  x = resBlock(x, temb, p, { prefix: "mid_block2", dimIn: m, dimOut: m, ...common });
  for (const level of plan.ups) {
    for (const block of level.blocks) {
      x = resBlock(tf.concat([x, skips.pop()!], 3), temb, p, { ...block, ...common });
    }
    x = attend(x, p, level.attention, attn);
    x = level.change.kind === "conv"
      ? conv(x, p, level.change.prefix)
      : conv(upsampleNearest2x(x), p, level.change.prefix);
  }
  x = resBlock(tf.concat([x, r], 3), temb, p, {
    prefix: "final_res_block",
    dimIn: 2 * plan.shape.width,
    dimOut: plan.shape.width,
    ...common,
  });
  return conv(x, p, "final_conv");
}
