/**
 * The course U-Net (../shared/reference/unet.md): a pure plan of its blocks, the parameter
 * list that plan implies (names, shapes, initialisers) and the forward pass over that plan.
 * @module
 */
import { tf } from "../tf.ts";
import {
  attention,
  conv,
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
}

interface ResBlock {
  prefix: string;
  dimIn: number;
  dimOut: number;
}

interface Level {
  block1: ResBlock;
  block2: ResBlock;
  attention: { prefix: string; dim: number };
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
  /** Up levels, lowest resolution first. */
  ups: Level[];
}

const HEADS = 4;
const DIM_HEAD = 32;

/** Derives the block plan of `Unet(width, multipliers, channels)` as in the reference. */
export function planUnet(shape: UnetShape): UnetPlan {
  const d = shape.width;
  const dims = [d, ...shape.multipliers.map((m) => d * m)];
  const pairs = dims.slice(0, -1).map((a, i) => [a, dims[i + 1]] as const);
  const downs = pairs.map(([a, b], i): Level => {
    const last = i === pairs.length - 1;
    const pre = `downs.${i}`;
    return {
      block1: { prefix: `${pre}.0`, dimIn: a, dimOut: a },
      block2: { prefix: `${pre}.1`, dimIn: a, dimOut: a },
      attention: { prefix: `${pre}.2`, dim: a },
      change: last
        ? { prefix: `${pre}.3`, kind: "conv", dimIn: a, dimOut: b }
        : { prefix: `${pre}.3.1`, kind: "resample", dimIn: a, dimOut: b },
    };
  });
  const ups = [...pairs].reverse().map(([a, b], i): Level => {
    const last = i === pairs.length - 1;
    const pre = `ups.${i}`;
    return {
      block1: { prefix: `${pre}.0`, dimIn: b + a, dimOut: b },
      block2: { prefix: `${pre}.1`, dimIn: b + a, dimOut: b },
      attention: { prefix: `${pre}.2`, dim: b },
      change: last
        ? { prefix: `${pre}.3`, kind: "conv", dimIn: b, dimOut: a }
        : { prefix: `${pre}.3.1`, kind: "resample", dimIn: b, dimOut: a },
    };
  });
  return { shape, timeDim: 4 * d, downs, midDim: dims[dims.length - 1], ups };
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
  const hidden = HEADS * DIM_HEAD;
  const linAttnP = (prefix: string, c: number) => {
    convP(`${prefix}.fn.fn.to_qkv`, 1, c, 3 * hidden, false);
    convP(`${prefix}.fn.fn.to_out.0`, 1, hidden, c);
    normP(`${prefix}.fn.fn.to_out.1`, c);
    normP(`${prefix}.fn.norm`, c);
  };
  const levelP = (level: Level, down: boolean) => {
    resP(level.block1);
    resP(level.block2);
    linAttnP(level.attention.prefix, level.attention.dim);
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
  convP("mid_attn.fn.fn.to_qkv", 1, m, 3 * hidden, false);
  convP("mid_attn.fn.fn.to_out", 1, hidden, m);
  normP("mid_attn.fn.norm", m);
  resP({ prefix: "mid_block2", dimIn: m, dimOut: m });
  resP({ prefix: "final_res_block", dimIn: 2 * d, dimOut: d });
  convP("final_conv", 1, d, c);
  return specs;
}

function resBlock(
  x: tf.Tensor4D,
  temb: tf.Tensor2D,
  p: ParamLookup,
  rb: ResBlock & { groups: number },
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
  h = silu(
    groupNorm(conv(h, p, `${rb.prefix}.block2.proj`), p, `${rb.prefix}.block2.norm`, rb.groups),
  );
  const res = rb.dimIn === rb.dimOut ? x : conv(x, p, `${rb.prefix}.res_conv`);
  return tf.add(h, res);
}

const ATTN = { heads: HEADS, dimHead: DIM_HEAD };

/**
 * The forward pass: predicts the noise of `x` [B, H, W, C] at float timesteps `t` [B].
 * Call it inside `tf.tidy` (training and sampling do).
 */
export function unetForward(
  plan: UnetPlan,
  p: ParamLookup,
  inputs: { x: tf.Tensor4D; t: tf.Tensor1D },
): tf.Tensor4D {
  const groups = plan.shape.groups;
  let x = conv(inputs.x, p, "init_conv");
  const r = x;
  const emb = sinusoidalEmbedding(inputs.t, plan.shape.width);
  const temb = linear(gelu(linear(emb, p, "time_mlp.1")), p, "time_mlp.3");
  const skips: tf.Tensor4D[] = [];
  for (const level of plan.downs) {
    x = resBlock(x, temb, p, { ...level.block1, groups });
    skips.push(x);
    x = resBlock(x, temb, p, { ...level.block2, groups });
    const a = level.attention.prefix;
    x = tf.add(x, linearAttention(groupNorm(x, p, `${a}.fn.norm`, 1), p, `${a}.fn.fn`, ATTN));
    skips.push(x);
    x = level.change.kind === "conv"
      ? conv(x, p, level.change.prefix)
      : conv(pixelUnshuffle(x), p, level.change.prefix);
  }
  const m = plan.midDim;
  x = resBlock(x, temb, p, { prefix: "mid_block1", dimIn: m, dimOut: m, groups });
  x = tf.add(x, attention(groupNorm(x, p, "mid_attn.fn.norm", 1), p, "mid_attn.fn.fn", ATTN));
  x = resBlock(x, temb, p, { prefix: "mid_block2", dimIn: m, dimOut: m, groups });
  for (const level of plan.ups) {
    x = resBlock(tf.concat([x, skips.pop()!], 3), temb, p, { ...level.block1, groups });
    x = resBlock(tf.concat([x, skips.pop()!], 3), temb, p, { ...level.block2, groups });
    const a = level.attention.prefix;
    x = tf.add(x, linearAttention(groupNorm(x, p, `${a}.fn.norm`, 1), p, `${a}.fn.fn`, ATTN));
    x = level.change.kind === "conv"
      ? conv(x, p, level.change.prefix)
      : conv(upsampleNearest2x(x), p, level.change.prefix);
  }
  x = resBlock(tf.concat([x, r], 3), temb, p, {
    prefix: "final_res_block",
    dimIn: 2 * plan.shape.width,
    dimOut: plan.shape.width,
    groups,
  });
  return conv(x, p, "final_conv");
}
