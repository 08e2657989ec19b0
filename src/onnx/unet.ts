/**
 * The U-Net of the `model` section as an ONNX graph, built block by block from the config and a
 * map of weights by PyTorch state-dict name (this library's layout: conv HWIO, linear [in, out],
 * as `checkpoint/model.safetensors` stores them). Of src/model it uses only the width of the
 * label encoding; the names follow the reference network (../shared/reference/unet.md):
 * `downs.i.j` residual blocks, `downs.i.n` attention, `downs.i.(n+1)` the change of resolution,
 * the same for `ups.i`, then `mid_block1`, `mid_attn`, `mid_block2`, `final_res_block`,
 * `final_conv`.
 *
 * The graph takes `x` [batch, size, size, channels] (NHWC, like the rest of ddpm-lab) and float
 * timesteps `t` [batch], and returns `out` of the shape of `x`; inside it runs NCHW. A
 * conditional model (`model.conditioning`) also takes `condition` [batch, E], the encoded
 * labels, and `uncond` [batch], 1 where the null embedding replaces them (./conditioning.ts);
 * its `metadata_props` record the attributes, their sizes and the encoding. Equivalent
 * rewrites that ORT runs faster, all exact up to float32 rounding:
 * - GroupNorm as Reshape + InstanceNormalization + per-channel affine (opset 17 has no
 *   GroupNormalization whose scale is per channel);
 * - attention products as MatMul (ORT runs Einsum slowly), `to_qkv` as three 1x1 convs;
 * - the attention scales folded into the q weights (full) or the `to_out` weights (linear);
 * - `pixel_unshuffle` as SpaceToDepth with the next 1x1 conv's input channels permuted;
 * - the residual block's `scale + 1` folded into the bias of its time projection.
 * Dropout is the identity at inference and has no node.
 * @module
 */
import type { ModelConfig } from "../../schemas/experiment.ts";
import type { NamedArray } from "../io/safetensors.ts";
import { conditionInputs, crossAttentionAt } from "./conditioning.ts";
import { GraphBuilder } from "./graph.ts";
import {
  add,
  concat,
  conv,
  gelu,
  groupNorm,
  type LayerContext,
  linear,
  mergeHeads,
  silu,
  splitHeads,
  toOihw,
  type Value,
  WeightReader,
} from "./layers.ts";

/** Options of {@link buildUnetOnnx}. */
export interface UnetOnnxOptions {
  /** Image size (the `transform.size`): the graph's spatial dimensions are fixed to it. */
  size: number;
  /** Extra `metadata_props` of the model (e.g. the sha256 of the weights it was built from). */
  metadata?: Record<string, string>;
  /**
   * A conditional model: the number of values of each `conditioning.attributes` entry, in order
   * (the dataset knows them; the run folder's manifest records them).
   */
  labelSizes?: number[];
}

/** What every block needs: the builder, the weights, the config and the embeddings. */
interface Context extends LayerContext {
  config: ModelConfig;
  /** SiLU of the time embedding [B, 4d], the input of every residual block's projection. */
  timeAct: string;
}

/** The sinusoidal embedding of t, then Linear(d, 4d), GELU, Linear(4d, 4d): [B, 4d]. */
function timeEmbedding(g: GraphBuilder, weights: WeightReader, t: string, d: number): string {
  const half = d / 2;
  const freqs = new Float32Array(half);
  const scale = Math.log(10000) / (half - 1);
  for (let i = 0; i < half; i++) freqs[i] = Math.exp(-scale * i);
  const col = g.node("Unsqueeze", [t, g.int64("time.axes", [1])], { name: "time.column" });
  const args = g.node("Mul", [col, g.float("time.freqs", freqs, [1, half])], { name: "time.args" });
  const emb = g.node("Concat", [
    g.node("Sin", [args], { name: "time.sin" }),
    g.node("Cos", [args], { name: "time.cos" }),
  ], { name: "time.embedding", attributes: { axis: 1 } });
  const ctx = { g, weights };
  const h = gelu(g, linear(ctx, emb, { prefix: "time_mlp.1", dims: [d, 4 * d] }), "time_mlp.2");
  return linear(ctx, h, { prefix: "time_mlp.3", dims: [4 * d, 4 * d] });
}

/**
 * ResnetBlock(a -> b): the time projection gives scale and shift (`scale + 1` is folded into its
 * bias); block1 = Conv3x3, GroupNorm, x (scale + 1) + shift, SiLU; block2 = Conv3x3, GroupNorm,
 * SiLU; plus the input (through a 1x1 conv when a != b).
 */
function resBlock(ctx: Context, x: Value, prefix: string, dimOut: number): Value {
  const { g, config } = ctx;
  const b = dimOut;
  const td = 4 * config.width;
  const w = ctx.weights.get(`${prefix}.mlp.1.weight`, [td, 2 * b]);
  const bias = ctx.weights.get(`${prefix}.mlp.1.bias`, [2 * b]);
  const scaleW = new Float32Array(td * b);
  const shiftW = new Float32Array(td * b);
  for (let i = 0; i < td; i++) {
    scaleW.set(w.data.subarray(i * 2 * b, i * 2 * b + b), i * b);
    shiftW.set(w.data.subarray(i * 2 * b + b, (i + 1) * 2 * b), i * b);
  }
  const scaleB = bias.data.slice(0, b).map((v) => v + 1);
  const shiftB = bias.data.slice(b);
  const column = (name: string, wData: Float32Array, bData: Float32Array): string => {
    const y = g.node("Gemm", [
      ctx.timeAct,
      g.float(`${prefix}.mlp.1.${name}.weight`, wData, [td, b]),
      g.float(`${prefix}.mlp.1.${name}.bias`, bData, [b]),
    ], { name: `${prefix}.mlp.1.${name}` });
    return g.node("Reshape", [y, g.int64(`${prefix}.${name}.shape`, [-1, b, 1, 1])], {
      name: `${prefix}.${name}`,
    });
  };
  const scale = column("scale", scaleW, scaleB);
  const shift = column("shift", shiftW, shiftB);
  let h = conv(ctx, x, `${prefix}.block1.proj`, { k: 3, cout: b });
  h = groupNorm(ctx, h, `${prefix}.block1.norm`, config.groups);
  const modulated = g.node("Add", [
    g.node("Mul", [h.name, scale], { name: `${prefix}.block1.scaled` }),
    shift,
  ], { name: `${prefix}.block1.shifted` });
  h = { ...h, name: silu(g, modulated, `${prefix}.block1.act`) };
  h = conv(ctx, h, `${prefix}.block2.proj`, { k: 3, cout: b });
  h = groupNorm(ctx, h, `${prefix}.block2.norm`, config.groups);
  h = { ...h, name: silu(g, h.name, `${prefix}.block2.act`) };
  const res = x.channels === b ? x : conv(ctx, x, `${prefix}.res_conv`, { k: 1, cout: b });
  return add(g, h, res, prefix);
}

/** The three thirds (q, k, v) of the `to_qkv` 1x1 conv weight, OIHW [hidden, C, 1, 1] each. */
function qkvThirds(ctx: Context, prefix: string, c: number, hidden: number): Float32Array[] {
  const oihw = toOihw(ctx.weights.get(`${prefix}.to_qkv.weight`, [1, 1, c, 3 * hidden]));
  return [0, 1, 2].map((i) => oihw.slice(i * hidden * c, (i + 1) * hidden * c));
}

/** q, k, v as [B, heads, dimHead, HW] each. */
function qkvHeads(ctx: Context, x: Value, prefix: string, qScale: number): string[] {
  const { heads, dimHead } = ctx.config.attention;
  const hidden = heads * dimHead;
  const thirds = qkvThirds(ctx, prefix, x.channels, hidden);
  return ["q", "k", "v"].map((part, i) => {
    const data = i === 0 && qScale !== 1 ? thirds[i].map((v) => v * qScale) : thirds[i];
    const y = conv(ctx, x, `${prefix}.to_qkv.${part}`, {
      k: 1,
      cout: hidden,
      bias: false,
      weight: { data },
    });
    return splitHeads(ctx.g, y, { heads, dimHead, prefix: `${prefix}.${part}` });
  });
}

/**
 * Softmax over axis 2 of [B, h, d, n] as exp(x - max) / sum. ORT's Softmax on an axis other
 * than the last transposes its input there and back, which costs more (measured).
 */
function softmaxMiddle(g: GraphBuilder, x: string, name: string): string {
  const max = g.node("ReduceMax", [x], {
    name: `${name}.max`,
    attributes: { axes: [2], keepdims: 1 },
  });
  const shifted = g.node("Sub", [x, max], { name: `${name}.shifted` });
  const e = g.node("Exp", [shifted], { name: `${name}.exp` });
  const sum = g.node("ReduceSum", [e, g.int64(`${name}.axes`, [2])], {
    name: `${name}.sum`,
    attributes: { keepdims: 1 },
  });
  return g.node("Div", [e, sum], { name });
}

/**
 * LinearAttention: q softmaxed over the head channels (its scale folded into `to_out`), k over
 * positions, out = (k vᵀ)ᵀ q computed as (v kᵀ) q, then Conv1x1 + GroupNorm(1, C).
 */
function linearAttention(ctx: Context, x: Value, prefix: string): Value {
  const { g } = ctx;
  const scale = ctx.config.attention.dimHead ** -0.5;
  const [q0, k0, v] = qkvHeads(ctx, x, prefix, 1);
  const q = softmaxMiddle(g, q0, `${prefix}.q.softmax`);
  const k = g.node("Softmax", [k0], { name: `${prefix}.k.softmax`, attributes: { axis: 3 } });
  const kT = g.node("Transpose", [k], {
    name: `${prefix}.k.t`,
    attributes: { perm: [0, 1, 3, 2] },
  });
  const contextT = g.node("MatMul", [v, kT], { name: `${prefix}.context_t` }); // [B, h, e, d]
  const out = g.node("MatMul", [contextT, q], { name: `${prefix}.out` }); // [B, h, e, n]
  const merged = mergeHeads(g, out, { ...ctx.config.attention, size: x.size, prefix });
  const projected = conv(ctx, merged, `${prefix}.to_out.0`, {
    k: 1,
    cout: x.channels,
    mapWeight: (w) => w.map((v) => v * scale),
  });
  return groupNorm(ctx, projected, `${prefix}.to_out.1`, 1);
}

/** Softmax attention over the HW tokens (scale folded into q), then Conv1x1. */
function fullAttention(ctx: Context, x: Value, prefix: string): Value {
  const { g } = ctx;
  const [q, k, v] = qkvHeads(ctx, x, prefix, ctx.config.attention.dimHead ** -0.5);
  const perm = { perm: [0, 1, 3, 2] };
  const qT = g.node("Transpose", [q], { name: `${prefix}.q.t`, attributes: perm });
  const sim = g.node("MatMul", [qT, k], { name: `${prefix}.sim` }); // [B, h, n, n]
  const attn = g.node("Softmax", [sim], { name: `${prefix}.attn`, attributes: { axis: 3 } });
  const vT = g.node("Transpose", [v], { name: `${prefix}.v.t`, attributes: perm });
  const out = g.node("MatMul", [attn, vT], { name: `${prefix}.out` }); // [B, h, n, e]
  const outT = g.node("Transpose", [out], { name: `${prefix}.out.t`, attributes: perm });
  const merged = mergeHeads(g, outT, { ...ctx.config.attention, size: x.size, prefix });
  return conv(ctx, merged, `${prefix}.to_out`, {
    k: 1,
    cout: x.channels,
  });
}

/** x + Attention(GroupNorm(1, C)(x)) (Residual(PreNorm(...)) of the reference). */
function attend(ctx: Context, x: Value, prefix: string, kind: "linear" | "full" | "none"): Value {
  if (kind === "none") return x;
  const normed = groupNorm(ctx, x, `${prefix}.fn.norm`, 1);
  const fn = kind === "linear" ? linearAttention : fullAttention;
  return add(ctx.g, x, fn(ctx, normed, `${prefix}.fn.fn`), prefix);
}

/** pixel_unshuffle(2) + Conv1x1(4a, b): SpaceToDepth orders channels (p1, p2, c), not (c, p1, p2). */
function downsample(ctx: Context, x: Value, prefix: string, cout: number): Value {
  const a = x.channels;
  const s2d = ctx.g.node("SpaceToDepth", [x.name], {
    name: `${prefix}.space_to_depth`,
    attributes: { blocksize: 2 },
  });
  const permute = (w: Float32Array): Float32Array => {
    const out = new Float32Array(w.length);
    for (let o = 0; o < cout; o++) {
      for (let c = 0; c < a; c++) {
        for (let p = 0; p < 4; p++) out[o * 4 * a + p * a + c] = w[o * 4 * a + c * 4 + p];
      }
    }
    return out;
  };
  return conv(ctx, { name: s2d, channels: 4 * a, size: x.size / 2 }, prefix, {
    k: 1,
    cout,
    mapWeight: permute,
  });
}

/** Nearest x2 + Conv3x3. */
function upsample(ctx: Context, x: Value, prefix: string, cout: number): Value {
  const { g } = ctx;
  const up = g.node("Resize", [
    x.name,
    "",
    g.float(`${prefix}.scales`, Float32Array.of(1, 1, 2, 2), [4]),
  ], {
    name: `${prefix}.nearest`,
    attributes: {
      mode: "nearest",
      coordinate_transformation_mode: "asymmetric",
      nearest_mode: "floor",
    },
  });
  return conv(ctx, { name: up, channels: x.channels, size: 2 * x.size }, prefix, { k: 3, cout });
}

/**
 * The serialised ONNX model of the U-Net `config` with `weights` (by PyTorch state-dict name,
 * this library's layout). Throws when a weight is missing, has another shape than the config
 * implies, or is left unused (a config that does not match the checkpoint).
 */
export function buildUnetOnnx(
  config: ModelConfig,
  weights: Map<string, NamedArray>,
  options: UnetOnnxOptions,
): Uint8Array {
  const g = new GraphBuilder();
  const reader = new WeightReader(weights);
  const { width: d, multipliers, channels, resBlocks: n } = config;
  const size = options.size;
  if (size % 2 ** (multipliers.length - 1) !== 0) {
    throw new Error(`onnx export: size ${size} is not divisible by 2^${multipliers.length - 1}`);
  }
  const xIn = g.input("x", ["batch", size, size, channels]);
  const tIn = g.input("t", ["batch"]);
  let temb = timeEmbedding(g, reader, tIn, d);
  const cond = config.conditioning;
  let labels: string | undefined;
  if (cond) {
    // The label embedding, added (projected) to the time embedding when `conditioning.time`.
    labels = conditionInputs({ g, weights: reader }, cond, options.labelSizes);
    if (cond.time) {
      const projected = linear({ g, weights: reader }, labels, {
        prefix: "cond_proj",
        dims: [cond.tokens * cond.width, 4 * d],
      });
      temb = g.node("Add", [temb, projected], { name: "time.conditioned" });
    }
  }
  const ctx: Context = { g, weights: reader, config, timeAct: silu(g, temb, "time.act") };
  const crossAttend = (h: Value, prefix: string, level: number | "mid"): Value =>
    cond && labels ? crossAttentionAt(ctx, h, { conditioning: cond, labels, prefix, level }) : h;

  const dims = [d, ...multipliers.map((m) => d * m)];
  const pairs = dims.slice(0, -1).map((a, i) => [a, dims[i + 1]] as const);
  const levels = config.attention.levels;
  const kindAt = (level: number) =>
    levels === "all" || levels.includes(level) ? config.attention.kind : "none";

  const nchw = g.node("Transpose", [xIn], { name: "x.nchw", attributes: { perm: [0, 3, 1, 2] } });
  let x = conv(ctx, { name: nchw, channels, size }, "init_conv", { k: 1, cout: d });
  const r = x;
  const skips: Value[] = [];
  pairs.forEach(([a, b], i) => {
    const pre = `downs.${i}`;
    for (let j = 0; j < n; j++) {
      x = resBlock(ctx, x, `${pre}.${j}`, a);
      if (j === n - 1) {
        x = crossAttend(attend(ctx, x, `${pre}.${n}`, kindAt(i)), `cross_attn.downs.${i}`, i);
      }
      skips.push(x);
    }
    x = i === pairs.length - 1
      ? conv(ctx, x, `${pre}.${n + 1}`, { k: 3, cout: b })
      : downsample(ctx, x, `${pre}.${n + 1}.1`, b);
  });
  const m = dims[dims.length - 1];
  x = resBlock(ctx, x, "mid_block1", m);
  x = crossAttend(attend(ctx, x, "mid_attn", config.middleAttention), "cross_attn.mid", "mid");
  x = resBlock(ctx, x, "mid_block2", m);
  [...pairs].reverse().forEach(([a, b], i) => {
    const pre = `ups.${i}`;
    for (let j = 0; j < n; j++) {
      x = resBlock(ctx, concat(g, x, skips.pop()!, `${pre}.${j}.in`), `${pre}.${j}`, b);
    }
    const level = pairs.length - 1 - i;
    x = crossAttend(attend(ctx, x, `${pre}.${n}`, kindAt(level)), `cross_attn.ups.${i}`, level);
    x = i === pairs.length - 1
      ? conv(ctx, x, `${pre}.${n + 1}`, { k: 3, cout: a })
      : upsample(ctx, x, `${pre}.${n + 1}.1`, a);
  });
  x = resBlock(ctx, concat(g, x, r, "final_res_block.in"), "final_res_block", d);
  x = conv(ctx, x, "final_conv", { k: 1, cout: channels });
  const nhwc = g.node("Transpose", [x.name], {
    name: "out.nhwc",
    attributes: { perm: [0, 2, 3, 1] },
  });
  g.output(nhwc, "out", ["batch", size, size, channels]);

  const unused = reader.unused();
  if (unused.length > 0) {
    throw new Error(
      `onnx export: ${unused.length} weights are not part of the model config's network ` +
        `(${unused.slice(0, 5).join(", ")}${unused.length > 5 ? ", ..." : ""})`,
    );
  }
  return g.encode({
    graphName: "ddpm_lab_unet",
    metadata: {
      "ddpm-lab.model": JSON.stringify(config),
      ...(cond
        ? {
          "ddpm-lab.condition": JSON.stringify({
            attributes: cond.attributes,
            sizes: options.labelSizes,
            encoding: cond.encoding,
          }),
        }
        : {}),
      ...options.metadata,
    },
  });
}
