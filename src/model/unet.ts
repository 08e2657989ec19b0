/**
 * The course U-Net (../shared/reference/unet.md) and its generalisation, written as PyTorch
 * modules are: each block declares its parameters in its constructor, under its state-dict
 * prefix, and its `forward` next to them reads them. The defaults (2 residual blocks per level,
 * linear attention at every level, full attention in the middle, no dropout) are exactly the
 * reference network.
 *
 * Parameter names follow the reference's PyTorch state dict: level i of the way down is the
 * ModuleList `downs.i` = [resBlock 0, ..., resBlock n-1, attention, down-change], so with
 * n = `resBlocks` the attention is `downs.i.n` and the change `downs.i.(n+1)`; a level without
 * attention keeps the index (an nn.Identity, which has no parameters). Same for `ups.i`.
 *
 * Building the modules makes no tensor and this file loads no TensorFlow.js: `forward` gets the
 * ops from its context (./mod.ts passes tfjs and ./layers.ts), so a dry run counts parameters
 * without loading tfjs.
 * @module
 */
import { type ConditionShape, CrossAttention, Tau } from "./conditioning.ts";
import type { AttentionOptions, ForwardContext } from "./layer_ops.ts";
import { countSpecs, type ParamInit, ParamScope, type ParamSpec } from "./params.ts";

export type { ForwardContext } from "./layer_ops.ts";

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
  /**
   * A conditional network (./conditioning.ts): its modules are declared after all the others,
   * so the unconditional part has the same names, order and initial values as without it.
   */
  condition?: ConditionShape;
}

/** The conditioning modules of a conditional U-Net. */
interface ConditionModules {
  tau: Tau;
  timeProj: Linear | null;
  downs: (CrossAttention | null)[];
  mid: CrossAttention | null;
  ups: (CrossAttention | null)[];
}

const uniform = (fanIn: number): ParamInit => ({ kind: "uniform", fanIn });

/** nn.Conv2d(cin, cout, k, padding=k//2) with an HWIO weight, stride 1. */
class Conv {
  readonly #prefix: string;
  readonly #bias: boolean;

  constructor(scope: ParamScope, shape: { k: number; cin: number; cout: number; bias?: boolean }) {
    const { k, cin, cout, bias = true } = shape;
    this.#prefix = scope.prefix;
    this.#bias = bias;
    scope.declare("weight", [k, k, cin, cout], uniform(k * k * cin));
    if (bias) scope.declare("bias", [cout], uniform(k * k * cin));
  }

  forward<T>(x: T, ctx: ForwardContext<T>): T {
    return ctx.ops.conv(x, this.#prefix, { bias: this.#bias });
  }
}

/** nn.Linear(cin, cout) with an [in, out] weight. */
class Linear {
  readonly #prefix: string;

  constructor(scope: ParamScope, cin: number, cout: number) {
    this.#prefix = scope.prefix;
    scope.declare("weight", [cin, cout], uniform(cin));
    scope.declare("bias", [cout], uniform(cin));
  }

  forward<T>(x: T, ctx: ForwardContext<T>): T {
    return ctx.ops.linear(x, this.#prefix);
  }
}

/** nn.GroupNorm(groups, c) (eps 1e-5, affine). */
class GroupNorm {
  readonly #prefix: string;
  readonly #groups: number;

  constructor(scope: ParamScope, c: number, groups: number) {
    this.#prefix = scope.prefix;
    this.#groups = groups;
    scope.declare("weight", [c], { kind: "ones" });
    scope.declare("bias", [c], { kind: "zeros" });
  }

  forward<T>(x: T, ctx: ForwardContext<T>): T {
    return ctx.ops.groupNorm(x, this.#prefix, this.#groups);
  }
}

/**
 * The reference `ResnetBlock`: h = SiLU(GroupNorm(conv3x3(x)) · (scale + 1) + shift) with
 * (scale, shift) = Linear(SiLU(t_emb)), [dropout,] SiLU(GroupNorm(conv3x3(h))), plus x (through a
 * 1x1 conv when the width changes).
 */
class ResBlock {
  readonly #dropout: number;
  readonly #mlp: Linear;
  readonly #block1: { proj: Conv; norm: GroupNorm };
  readonly #block2: { proj: Conv; norm: GroupNorm };
  readonly #resConv: Conv | null;

  constructor(
    scope: ParamScope,
    dims: { dimIn: number; dimOut: number },
    options: { timeDim: number; groups: number; dropout: number },
  ) {
    const { dimIn, dimOut } = dims;
    const { groups } = options;
    this.#dropout = options.dropout;
    this.#mlp = new Linear(scope.at("mlp.1"), options.timeDim, 2 * dimOut);
    this.#block1 = {
      proj: new Conv(scope.at("block1.proj"), { k: 3, cin: dimIn, cout: dimOut }),
      norm: new GroupNorm(scope.at("block1.norm"), dimOut, groups),
    };
    this.#block2 = {
      proj: new Conv(scope.at("block2.proj"), { k: 3, cin: dimOut, cout: dimOut }),
      norm: new GroupNorm(scope.at("block2.norm"), dimOut, groups),
    };
    this.#resConv = dimIn === dimOut
      ? null
      : new Conv(scope.at("res_conv"), { k: 1, cin: dimIn, cout: dimOut });
  }

  forward<T>(x: T, temb: T, ctx: ForwardContext<T>): T {
    const L = ctx.ops;
    const ss = this.#mlp.forward(L.silu(temb), ctx);
    let h = this.#block1.norm.forward(this.#block1.proj.forward(x, ctx), ctx);
    h = L.silu(L.scaleShift(h, ss));
    if (this.#dropout > 0) h = L.dropout(h, this.#dropout);
    h = L.silu(this.#block2.norm.forward(this.#block2.proj.forward(h, ctx), ctx));
    return L.add(h, this.#resConv ? this.#resConv.forward(x, ctx) : x);
  }
}

/**
 * Residual(PreNorm(dim, LinearAttention | Attention)): x + fn(GroupNorm(1, C)(x)). PyTorch
 * registers `fn` before `norm`, so the attention's parameters come first.
 */
class AttentionBlock {
  readonly #kind: "linear" | "full";
  readonly #heads: AttentionOptions;
  readonly #fn: string;
  readonly #norm: GroupNorm;
  readonly #out: [Conv, GroupNorm | null];

  constructor(
    scope: ParamScope,
    dim: number,
    options: { kind: "linear" | "full"; heads: AttentionOptions },
  ) {
    this.#kind = options.kind;
    this.#heads = options.heads;
    const fn = scope.at("fn.fn");
    this.#fn = fn.prefix;
    const hidden = options.heads.heads * options.heads.dimHead;
    new Conv(fn.at("to_qkv"), { k: 1, cin: dim, cout: 3 * hidden, bias: false });
    this.#out = options.kind === "linear"
      ? [
        new Conv(fn.at("to_out.0"), { k: 1, cin: hidden, cout: dim }),
        new GroupNorm(fn.at("to_out.1"), dim, 1),
      ]
      : [new Conv(fn.at("to_out"), { k: 1, cin: hidden, cout: dim }), null];
    this.#norm = new GroupNorm(scope.at("fn.norm"), dim, 1);
  }

  forward<T>(x: T, ctx: ForwardContext<T>): T {
    const L = ctx.ops;
    const normed = this.#norm.forward(x, ctx);
    const merged = this.#kind === "linear"
      ? L.linearAttention(normed, this.#fn, this.#heads)
      : L.attention(normed, this.#fn, this.#heads);
    const [conv, norm] = this.#out;
    const out = conv.forward(merged, ctx);
    return L.add(x, norm ? norm.forward(out, ctx) : out);
  }
}

/** The change of resolution that ends a level. */
class Change {
  readonly #conv: Conv;
  readonly #resample: "down" | "up" | null;

  /**
   * The last level: a 3x3 conv at `<prefix>`. Other levels: down, pixel-unshuffle then a 1x1
   * conv of 4 dimIn channels; up, nearest 2x then a 3x3 conv; the conv at `<prefix>.1`.
   */
  constructor(
    scope: ParamScope,
    dims: { dimIn: number; dimOut: number },
    resample: "down" | "up" | null,
  ) {
    const { dimIn, dimOut } = dims;
    this.#resample = resample;
    this.#conv = resample === null
      ? new Conv(scope, { k: 3, cin: dimIn, cout: dimOut })
      : resample === "down"
      ? new Conv(scope.at(1), { k: 1, cin: 4 * dimIn, cout: dimOut })
      : new Conv(scope.at(1), { k: 3, cin: dimIn, cout: dimOut });
  }

  forward<T>(x: T, ctx: ForwardContext<T>): T {
    const L = ctx.ops;
    if (this.#resample === "down") return this.#conv.forward(L.pixelUnshuffle(x), ctx);
    if (this.#resample === "up") return this.#conv.forward(L.upsample(x), ctx);
    return this.#conv.forward(x, ctx);
  }
}

/** One level of the U-Net: its residual blocks, its attention (or none) and its change. */
interface Level {
  blocks: ResBlock[];
  attention: AttentionBlock | null;
  change: Change;
}

/** The U-Net: its modules, their parameters in state-dict order, and the forward pass. */
export class Unet {
  /** Every parameter, in PyTorch's state-dict order. */
  readonly params: readonly ParamSpec[];
  /** A conditional network's label shape; undefined for an unconditional one. */
  readonly condition: ConditionShape | undefined;
  readonly #width: number;
  readonly #initConv: Conv;
  readonly #timeMlp: [Linear, Linear];
  readonly #downs: Level[];
  readonly #ups: Level[];
  readonly #mid: [ResBlock, AttentionBlock | null, ResBlock];
  readonly #finalRes: ResBlock;
  readonly #finalConv: Conv;
  readonly #cond: ConditionModules | null;

  /** Declares the modules of `Unet(width, multipliers, channels)` and its options. */
  constructor(shape: UnetShape) {
    const root = new ParamScope();
    const d = shape.width;
    const n = shape.resBlocks ?? 2;
    const timeDim = 4 * d;
    const block = { timeDim, groups: shape.groups, dropout: shape.dropout ?? 0 };
    const heads = { heads: shape.attention?.heads ?? 4, dimHead: shape.attention?.dimHead ?? 32 };
    const kind = shape.attention?.kind ?? "linear";
    const levels = shape.attention?.levels ?? "all";
    const attentionAt = (scope: ParamScope, level: number, dim: number) =>
      kind !== "none" && (levels === "all" || levels.includes(level))
        ? new AttentionBlock(scope, dim, { kind, heads })
        : null;
    const dims = [d, ...shape.multipliers.map((m) => d * m)];
    const pairs = dims.slice(0, -1).map((a, i) => [a, dims[i + 1]] as const);
    const last = pairs.length - 1;

    this.#width = d;
    this.#initConv = new Conv(root.at("init_conv"), { k: 1, cin: shape.channels, cout: d });
    this.#timeMlp = [
      new Linear(root.at("time_mlp.1"), d, timeDim),
      new Linear(root.at("time_mlp.3"), timeDim, timeDim),
    ];
    // PyTorch registers `downs` and `ups` before the middle blocks: keep its state-dict order.
    this.#downs = pairs.map(([a, b], i): Level => {
      const scope = root.at(`downs.${i}`);
      return {
        blocks: Array.from(
          { length: n },
          (_, j) => new ResBlock(scope.at(j), { dimIn: a, dimOut: a }, block),
        ),
        attention: attentionAt(scope.at(n), i, a),
        change: new Change(scope.at(n + 1), { dimIn: a, dimOut: b }, i === last ? null : "down"),
      };
    });
    this.#ups = [...pairs].reverse().map(([a, b], i): Level => {
      const scope = root.at(`ups.${i}`);
      return {
        blocks: Array.from(
          { length: n },
          (_, j) => new ResBlock(scope.at(j), { dimIn: b + a, dimOut: b }, block),
        ),
        attention: attentionAt(scope.at(n), last - i, b),
        change: new Change(scope.at(n + 1), { dimIn: b, dimOut: a }, i === last ? null : "up"),
      };
    });
    const m = dims[dims.length - 1];
    const middle = shape.middleAttention ?? "full";
    this.#mid = [
      new ResBlock(root.at("mid_block1"), { dimIn: m, dimOut: m }, block),
      middle === "none"
        ? null
        : new AttentionBlock(root.at("mid_attn"), m, { kind: middle, heads }),
      new ResBlock(root.at("mid_block2"), { dimIn: m, dimOut: m }, block),
    ];
    this.#finalRes = new ResBlock(root.at("final_res_block"), { dimIn: 2 * d, dimOut: d }, block);
    this.#finalConv = new Conv(root.at("final_conv"), { k: 1, cin: d, cout: shape.channels });
    this.#cond = null;
    const c = shape.condition;
    this.condition = c;
    if (c) {
      const tokens = c.tokens * c.width;
      const cross = c.crossAttention;
      const crossAt = (scope: ParamScope, level: number | "mid", dim: number) =>
        cross &&
          (level === "mid" ? cross.middle : cross.levels === "all" || cross.levels.includes(level))
          ? new CrossAttention(scope, dim, { width: c.width, ...cross })
          : null;
      const tau = new Tau(root, c);
      const timeProj = c.time ? new Linear(root.at("cond_proj"), tokens, timeDim) : null;
      this.#cond = {
        tau,
        timeProj,
        downs: pairs.map(([a], i) => crossAt(root.at(`cross_attn.downs.${i}`), i, a)),
        mid: crossAt(root.at("cross_attn.mid"), "mid", m),
        ups: [...pairs].reverse().map(([, b], i) =>
          crossAt(root.at(`cross_attn.ups.${i}`), last - i, b)
        ),
      };
    }
    this.params = root.specs;
  }

  /** Number of trainable scalars. */
  get parameterCount(): number {
    return countSpecs(this.params);
  }

  /**
   * The network output for `x` [B, H, W, C] at float timesteps `t` [B], in the ops of `ctx`
   * (tfjs tensors, or graph nodes when traced). The residual blocks' dropout is the ops' own
   * (on while training, off while sampling).
   */
  forward<T>(x: T, t: T, ctx: ForwardContext<T>): T {
    const L = ctx.ops;
    const attend = (h: T, block: AttentionBlock | null) => block ? block.forward(h, ctx) : h;
    x = this.#initConv.forward(x, ctx);
    const r = x;
    const [mlp1, mlp3] = this.#timeMlp;
    let temb = mlp3.forward(
      L.gelu(mlp1.forward(L.timeEmbedding(t, this.#width), ctx)),
      ctx,
    );
    const cond = this.#cond;
    if (!cond && ctx.condition) throw new Error("labels given to an unconditional network");
    const emb = cond ? cond.tau.forward(x, ctx) : null;
    if (cond?.timeProj && emb) temb = L.add(temb, cond.timeProj.forward(emb, ctx));
    const crossAttend = (h: T, block: CrossAttention | null | undefined) =>
      block && emb ? block.forward(h, emb, ctx) : h;
    const skips: T[] = [];
    this.#downs.forEach((level, i) => {
      level.blocks.forEach((block, j) => {
        x = block.forward(x, temb, ctx);
        if (j === level.blocks.length - 1) {
          x = crossAttend(attend(x, level.attention), cond?.downs[i]);
        }
        skips.push(x);
      });
      x = level.change.forward(x, ctx);
    });
    const [mid1, midAttention, mid2] = this.#mid;
    x = crossAttend(attend(mid1.forward(x, temb, ctx), midAttention), cond?.mid);
    x = mid2.forward(x, temb, ctx);
    this.#ups.forEach((level, i) => {
      for (const block of level.blocks) {
        x = block.forward(L.concat(x, skips.pop()!), temb, ctx);
      }
      x = level.change.forward(crossAttend(attend(x, level.attention), cond?.ups[i]), ctx);
    });
    x = this.#finalRes.forward(L.concat(x, r), temb, ctx);
    return this.#finalConv.forward(x, ctx);
  }
}

/** Number of trainable scalars of the network `shape` describes (no tensors are made). */
export function countParameters(shape: UnetShape): number {
  return new Unet(shape).parameterCount;
}

/**
 * The resolution of every level for `size` x `size` images: level i runs at size / 2^i (the
 * last level's change is a 3x3 conv, so the middle runs at the last level's resolution).
 */
export function levelResolutions(levels: number, size: number): number[] {
  return Array.from({ length: levels }, (_, i) => size / 2 ** i);
}
