/**
 * The plan of the course U-Net (../shared/reference/unet.md) and its generalisation: its blocks
 * and the parameters they imply (names, shapes, initialisers), derived from the `model` section
 * by pure functions, without TensorFlow.js, so a dry run can count parameters cheaply. The
 * forward pass over a plan is in ./unet.ts.
 *
 * Parameter names follow the reference's PyTorch state dict: level i of the way down is the
 * ModuleList `downs.i` = [resBlock 0, ..., resBlock n-1, attention, down-change], so with
 * n = `resBlocks` the attention is `downs.i.n` and the change `downs.i.(n+1)`; a level without
 * attention keeps the index (an nn.Identity, which has no parameters). Same for `ups.i`.
 * @module
 */

/** Options of the attention blocks. */
export interface AttentionOptions {
  /** Number of heads (4 in the reference). */
  heads: number;
  /** Width of each head (32 in the reference). */
  dimHead: number;
}

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

/** A residual block of the plan. */
export interface ResBlock {
  prefix: string;
  dimIn: number;
  dimOut: number;
}

/** An attention block of the plan. */
export interface AttentionBlock {
  prefix: string;
  dim: number;
  kind: "linear" | "full";
}

/** One level of the plan: its residual blocks, attention and resolution change. */
export interface Level {
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

/** Number of trainable scalars of a plan (no tensors are made). */
export function countPlanParameters(plan: UnetPlan): number {
  return unetParamSpecs(plan).reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
}
