/**
 * The course U-Net (../shared/reference/unet.md) and its generalisation: a pure plan of its
 * blocks, the parameter list that plan implies (names, shapes, initialisers) and the forward pass
 * over that plan. The defaults (2 residual blocks per level, linear attention at every level,
 * full attention in the middle, no dropout) are exactly the reference network.
 *
 * Parameter names follow the reference's PyTorch state dict: level i of the way down is the
 * ModuleList `downs.i` = [resBlock 0, ..., resBlock n-1, attention, down-change], so with
 * n = `resBlocks` the attention is `downs.i.n` and the change `downs.i.(n+1)`; a level without
 * attention keeps the index (an nn.Identity, which has no parameters). Same for `ups.i`.
 * @module
 */
import type { Rng } from "../rng.ts";
import { tf } from "../tf.ts";
import {
  attention,
  type AttentionOptions,
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

/** An attention block type. */
export type AttentionKind = "linear" | "full" | "none";

/** Shape options of the U-Net (the `model` section, less its `kind`). */
export interface UnetShape {
  /** Base width d. */
  width: number;
  /** Width multiplier per level. */
  multipliers: number[];
  /** Image channels. */
  channels: number;
  /** GroupNorm groups inside residual blocks. */
  groups: number;
  /** Residual blocks per level (default 2). */
  resBlocks?: number;
  /** Attention at the levels: kind (default linear), levels (default all), heads (4) x dimHead (32). */
  attention?: {
    kind?: AttentionKind;
    levels?: "all" | number[];
    heads?: number;
    dimHead?: number;
  };
  /** Attention between the middle residual blocks (default full). */
  middleAttention?: AttentionKind;
  /** Dropout rate inside residual blocks during training (default 0). */
  dropout?: number;
}

interface ResBlock {
  prefix: string;
  dimIn: number;
  dimOut: number;
}

interface AttentionBlock {
  prefix: string;
  dim: number;
  kind: "linear" | "full";
}

interface Level {
  blocks: ResBlock[];
  attention: AttentionBlock | null;
  /** `resample`: pixel-unshuffle + 1x1 (down) or nearest x2 + 3x3 (up); `conv`: a 3x3 conv. */
  change: { prefix: string; kind: "resample" | "conv"; dimIn: number; dimOut: number };
}

/** The blocks of a U-Net, derived from its shape; both parameters and forward pass follow it. */
export interface UnetPlan {
  /** The shape the plan was made from. */
  shape: UnetShape;
  /** Width of the time embedding (4d). */
  timeDim: number;
  /** Down levels, highest resolution first. */
  downs: Level[];
  /** Middle width. */
  midDim: number;
  /** The middle attention block, or null. */
  midAttention: AttentionBlock | null;
  /** Up levels, lowest resolution first. */
  ups: Level[];
  /** Heads of every attention block. */
  attentionOptions: AttentionOptions;
  /** Dropout rate of the residual blocks (training only). */
  dropout: number;
}

/** Derives the block plan of `Unet(width, multipliers, channels)` and its options. */
export function planUnet(shape: UnetShape): UnetPlan {
  const d = shape.width;
  const n = shape.resBlocks ?? 2;
  const levels = shape.attention?.levels ?? "all";
  const kind = shape.attention?.kind ?? "linear";
  const dims = [d, ...shape.multipliers.map((m) => d * m)];
  const pairs = dims.slice(0, -1).map((a, i) => [a, dims[i + 1]] as const);
  const attentionAt = (level: number, prefix: string, dim: number): AttentionBlock | null =>
    kind !== "none" && (levels === "all" || levels.includes(level)) ? { prefix, dim, kind } : null;
  const downs = pairs.map(([a, b], i): Level => {
    const last = i === pairs.length - 1;
    const pre = `downs.${i}`;
    return {
      blocks: Array.from({ length: n }, (_, j) => ({ prefix: `${pre}.${j}`, dimIn: a, dimOut: a })),
      attention: attentionAt(i, `${pre}.${n}`, a),
      change: last
        ? { prefix: `${pre}.${n + 1}`, kind: "conv", dimIn: a, dimOut: b }
        : { prefix: `${pre}.${n + 1}.1`, kind: "resample", dimIn: a, dimOut: b },
    };
  });
  const ups = [...pairs].reverse().map(([a, b], i): Level => {
    const last = i === pairs.length - 1;
    const pre = `ups.${i}`;
    return {
      blocks: Array.from({ length: n }, (_, j) => ({
        prefix: `${pre}.${j}`,
        dimIn: b + a,
        dimOut: b,
      })),
      attention: attentionAt(pairs.length - 1 - i, `${pre}.${n}`, b),
      change: last
        ? { prefix: `${pre}.${n + 1}`, kind: "conv", dimIn: b, dimOut: a }
        : { prefix: `${pre}.${n + 1}.1`, kind: "resample", dimIn: b, dimOut: a },
    };
  });
  const midDim = dims[dims.length - 1];
  const mid = shape.middleAttention ?? "full";
  return {
    shape,
    timeDim: 4 * d,
    downs,
    midDim,
    midAttention: mid === "none" ? null : { prefix: "mid_attn", dim: midDim, kind: mid },
    ups,
    attentionOptions: {
      heads: shape.attention?.heads ?? 4,
      dimHead: shape.attention?.dimHead ?? 32,
    },
    dropout: shape.dropout ?? 0,
  };
}

/**
 * The resolution of every level for `size` x `size` images: level i runs at size / 2^i (the
 * last level's change is a 3x3 conv, so the middle runs at the last level's resolution).
 */
export function levelResolutions(levels: number, size: number): number[] {
  return Array.from({ length: levels }, (_, i) => size / 2 ** i);
}

/** How a parameter is initialised (PyTorch's defaults). */
export type ParamInit =
  | { kind: "uniform"; fanIn: number } // U(-1/sqrt(fanIn), 1/sqrt(fanIn)): Conv2d/Linear weight and bias
  | { kind: "ones" }
  | { kind: "zeros" };

/** One parameter: PyTorch name, shape in this library's layout, and initialiser. */
export interface ParamSpec {
  /** PyTorch state-dict name. */
  name: string;
  /** Shape here (conv HWIO, linear [in, out]). */
  shape: number[];
  /** Initialiser. */
  init: ParamInit;
}

/** The parameters a plan needs, in PyTorch's state-dict order. */
export function unetParamSpecs(plan: UnetPlan): ParamSpec[] {
  const specs: ParamSpec[] = [];
  const convP = (prefix: string, k: number, cin: number, cout: number, bias = true) => {
    const fanIn = k * k * cin;
    specs.push({
      name: `${prefix}.weight`,
      shape: [k, k, cin, cout],
      init: { kind: "uniform", fanIn },
    });
    if (bias) {
      specs.push({ name: `${prefix}.bias`, shape: [cout], init: { kind: "uniform", fanIn } });
    }
  };
  const linearP = (prefix: string, cin: number, cout: number) => {
    specs.push({
      name: `${prefix}.weight`,
      shape: [cin, cout],
      init: { kind: "uniform", fanIn: cin },
    });
    specs.push({ name: `${prefix}.bias`, shape: [cout], init: { kind: "uniform", fanIn: cin } });
  };
  const normP = (prefix: string, c: number) => {
    specs.push({ name: `${prefix}.weight`, shape: [c], init: { kind: "ones" } });
    specs.push({ name: `${prefix}.bias`, shape: [c], init: { kind: "zeros" } });
  };
  const resP = (rb: ResBlock) => {
    linearP(`${rb.prefix}.mlp.1`, plan.timeDim, 2 * rb.dimOut);
    convP(`${rb.prefix}.block1.proj`, 3, rb.dimIn, rb.dimOut);
    normP(`${rb.prefix}.block1.norm`, rb.dimOut);
    convP(`${rb.prefix}.block2.proj`, 3, rb.dimOut, rb.dimOut);
    normP(`${rb.prefix}.block2.norm`, rb.dimOut);
    if (rb.dimIn !== rb.dimOut) convP(`${rb.prefix}.res_conv`, 1, rb.dimIn, rb.dimOut);
  };
  const hidden = plan.attentionOptions.heads * plan.attentionOptions.dimHead;
  // Residual(PreNorm(dim, fn)): PreNorm registers `fn` before `norm`.
  const attnP = (block: AttentionBlock | null) => {
    if (!block) return;
    const { prefix, dim: c } = block;
    convP(`${prefix}.fn.fn.to_qkv`, 1, c, 3 * hidden, false);
    if (block.kind === "linear") {
      convP(`${prefix}.fn.fn.to_out.0`, 1, hidden, c);
      normP(`${prefix}.fn.fn.to_out.1`, c);
    } else convP(`${prefix}.fn.fn.to_out`, 1, hidden, c);
    normP(`${prefix}.fn.norm`, c);
  };
  const levelP = (level: Level, down: boolean) => {
    level.blocks.forEach(resP);
    attnP(level.attention);
    const ch = level.change;
    if (ch.kind === "conv") convP(ch.prefix, 3, ch.dimIn, ch.dimOut);
    else if (down) convP(ch.prefix, 1, 4 * ch.dimIn, ch.dimOut);
    else convP(ch.prefix, 3, ch.dimIn, ch.dimOut);
  };
  const { width: d, channels: c } = plan.shape;
  convP("init_conv", 1, c, d);
  linearP("time_mlp.1", d, plan.timeDim);
  linearP("time_mlp.3", plan.timeDim, plan.timeDim);
  // PyTorch registers `downs` and `ups` before the middle blocks: keep its state-dict order.
  for (const level of plan.downs) levelP(level, true);
  for (const level of plan.ups) levelP(level, false);
  const m = plan.midDim;
  resP({ prefix: "mid_block1", dimIn: m, dimOut: m });
  attnP(plan.midAttention);
  resP({ prefix: "mid_block2", dimIn: m, dimOut: m });
  resP({ prefix: "final_res_block", dimIn: 2 * d, dimOut: d });
  convP("final_conv", 1, d, c);
  return specs;
}

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
