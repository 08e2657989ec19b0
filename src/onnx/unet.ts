/**
 * The U-Net of the `model` section as an ONNX graph, built block by block from the config and a
 * map of weights by PyTorch state-dict name (this library's layout: conv HWIO, linear [in, out],
 * as `checkpoint/model.safetensors` stores them). It depends on nothing in src/model but the
 * config and the names, which follow the reference network (../shared/reference/unet.md):
 * `downs.i.j` residual blocks, `downs.i.n` attention, `downs.i.(n+1)` the change of resolution,
 * the same for `ups.i`, then `mid_block1`, `mid_attn`, `mid_block2`, `final_res_block`,
 * `final_conv`.
 *
 * The graph takes `x` [batch, size, size, channels] (NHWC, like the rest of ddpm-lab) and float
 * timesteps `t` [batch], and returns `out` of the shape of `x`; inside it runs NCHW. Equivalent
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
import { type NamedArray, permute4 } from "../io/safetensors.ts";
import { GraphBuilder } from "./graph.ts";

/** Options of {@link buildUnetOnnx}. */
export interface UnetOnnxOptions {
  /** Image size (the `transform.size`): the graph's spatial dimensions are fixed to it. */
  size: number;
  /** Extra `metadata_props` of the model (e.g. the sha256 of the weights it was built from). */
  metadata?: Record<string, string>;
}

/** A tensor flowing through the graph: its name and its static NCHW shape (batch excluded). */
interface Value {
  name: string;
  channels: number;
  size: number;
}

/** What every block needs: the builder, the weights, the time embeddings and the options. */
interface Context {
  g: GraphBuilder;
  weights: WeightReader;
  config: ModelConfig;
  /** SiLU of the time embedding [B, 4d], the input of every residual block's projection. */
  timeAct: string;
}

/** Reads weights by name, checking shapes, and remembers which were used. */
class WeightReader {
  #map: Map<string, NamedArray>;
  #used = new Set<string>();
  constructor(map: Map<string, NamedArray>) {
    this.#map = map;
  }

  get(name: string, shape: number[]): NamedArray {
    const a = this.#map.get(name);
    if (!a) throw new Error(`onnx export: the weights have no ${name} (shape [${shape}] expected)`);
    if (a.shape.join("x") !== shape.join("x")) {
      throw new Error(
        `onnx export: ${name} has shape [${a.shape}], the model config needs [${shape}]`,
      );
    }
    this.#used.add(name);
    return a;
  }

  unused(): string[] {
    return [...this.#map.keys()].filter((k) => !this.#used.has(k));
  }
}

/** HWIO [kh, kw, i, o] -> OIHW [o, i, kh, kw]. */
function toOihw(a: NamedArray): Float32Array {
  return permute4(a, [3, 2, 0, 1]).data;
}

interface ConvOptions {
  k: number;
  cout: number;
  bias?: boolean;
  /** Transforms the OIHW weight before it is stored (scale folding, channel permutation). */
  mapWeight?: (oihw: Float32Array) => Float32Array;
  /** The OIHW weight itself, when it is not `<prefix>.weight` (the thirds of `to_qkv`). */
  weight?: { data: Float32Array };
}

/** Conv2d k x k, stride 1, 'same' padding, from `<prefix>.weight` (HWIO) and `<prefix>.bias`. */
function conv(ctx: Context, x: Value, prefix: string, options: ConvOptions): Value {
  const { k, cout } = options;
  const cin = x.channels;
  let w = options.weight?.data ??
    toOihw(ctx.weights.get(`${prefix}.weight`, [k, k, cin, cout]));
  if (options.mapWeight) w = options.mapWeight(w);
  const inputs = [x.name, ctx.g.float(`${prefix}.weight`, w, [cout, cin, k, k])];
  if (options.bias ?? true) {
    inputs.push(ctx.g.float(`${prefix}.bias`, ctx.weights.get(`${prefix}.bias`, [cout]).data, [
      cout,
    ]));
  }
  const p = (k - 1) / 2;
  const name = ctx.g.node("Conv", inputs, {
    name: prefix,
    attributes: { kernel_shape: [k, k], pads: [p, p, p, p], strides: [1, 1] },
  });
  return { name, channels: cout, size: x.size };
}

/** `x @ W + b` on [B, in] from `<prefix>.weight` ([in, out]) and `<prefix>.bias`. */
function linear(
  ctx: Pick<Context, "g" | "weights">,
  x: string,
  prefix: string,
  dims: [number, number],
): string {
  const cout = dims[1];
  const w = ctx.g.float(`${prefix}.weight`, ctx.weights.get(`${prefix}.weight`, dims).data, dims);
  const b = ctx.g.float(`${prefix}.bias`, ctx.weights.get(`${prefix}.bias`, [cout]).data, [cout]);
  return ctx.g.node("Gemm", [x, w, b], { name: prefix });
}

function silu(g: GraphBuilder, x: string, name: string): string {
  return g.node("Mul", [x, g.node("Sigmoid", [x], { name: `${name}.sigmoid` })], { name });
}

/** Exact GELU, 0.5 x (1 + erf(x / √2)) (Gelu itself is opset 20). */
function gelu(g: GraphBuilder, x: string, name: string): string {
  const scaled = g.node("Mul", [x, g.float(`${name}.rsqrt2`, Float32Array.of(Math.SQRT1_2), [])], {
    name: `${name}.scaled`,
  });
  const erf = g.node("Erf", [scaled], { name: `${name}.erf` });
  const one = g.node("Add", [erf, g.float(`${name}.one`, Float32Array.of(1), [])], {
    name: `${name}.plus1`,
  });
  const half = g.node("Mul", [x, g.float(`${name}.half`, Float32Array.of(0.5), [])], {
    name: `${name}.half`,
  });
  return g.node("Mul", [half, one], { name });
}

/** GroupNorm(groups, C), eps 1e-5, affine `<prefix>.weight` / `.bias`. */
function groupNorm(ctx: Context, x: Value, prefix: string, groups: number): Value {
  const { g } = ctx;
  const c = x.channels;
  const grouped = g.node("Reshape", [x.name, g.int64(`${prefix}.grouped`, [0, groups, -1])], {
    name: `${prefix}.grouped`,
  });
  const normed = g.node("InstanceNormalization", [
    grouped,
    g.float(`${prefix}.ones`, new Float32Array(groups).fill(1), [groups]),
    g.float(`${prefix}.zeros`, new Float32Array(groups), [groups]),
  ], { name: `${prefix}.normed`, attributes: { epsilon: { float: 1e-5 } } });
  const back = g.node("Reshape", [normed, g.int64(`${prefix}.shape`, [-1, c, x.size, x.size])], {
    name: `${prefix}.ungrouped`,
  });
  const gamma = g.float(`${prefix}.weight`, ctx.weights.get(`${prefix}.weight`, [c]).data, [
    c,
    1,
    1,
  ]);
  const beta = g.float(`${prefix}.bias`, ctx.weights.get(`${prefix}.bias`, [c]).data, [c, 1, 1]);
  const scaled = g.node("Mul", [back, gamma], { name: `${prefix}.scaled` });
  return { ...x, name: g.node("Add", [scaled, beta], { name: prefix }) };
}

function add(g: GraphBuilder, a: Value, b: Value, name: string): Value {
  return { ...a, name: g.node("Add", [a.name, b.name], { name }) };
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
  const h = gelu(g, linear(ctx, emb, "time_mlp.1", [d, 4 * d]), "time_mlp.2");
  return linear(ctx, h, "time_mlp.3", [4 * d, 4 * d]);
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
    return ctx.g.node("Reshape", [
      y.name,
      ctx.g.int64(`${prefix}.${part}.shape`, [-1, heads, dimHead, x.size * x.size]),
    ], { name: `${prefix}.${part}` });
  });
}

/** [B, heads, dimHead, HW] -> [B, heads * dimHead, H, W] (channel = head * dimHead + e). */
function mergeHeads(ctx: Context, x: string, like: Value, prefix: string): Value {
  const { heads, dimHead } = ctx.config.attention;
  const hidden = heads * dimHead;
  const name = ctx.g.node("Reshape", [
    x,
    ctx.g.int64(`${prefix}.merged.shape`, [-1, hidden, like.size, like.size]),
  ], { name: `${prefix}.merged` });
  return { name, channels: hidden, size: like.size };
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
  const merged = mergeHeads(ctx, out, x, prefix);
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
  return conv(ctx, mergeHeads(ctx, outT, x, prefix), `${prefix}.to_out`, {
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

function concat(g: GraphBuilder, a: Value, b: Value, name: string): Value {
  return {
    name: g.node("Concat", [a.name, b.name], { name, attributes: { axis: 1 } }),
    channels: a.channels + b.channels,
    size: a.size,
  };
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
  const temb = timeEmbedding(g, reader, tIn, d);
  const ctx: Context = { g, weights: reader, config, timeAct: silu(g, temb, "time.act") };

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
      if (j === n - 1) x = attend(ctx, x, `${pre}.${n}`, kindAt(i));
      skips.push(x);
    }
    x = i === pairs.length - 1
      ? conv(ctx, x, `${pre}.${n + 1}`, { k: 3, cout: b })
      : downsample(ctx, x, `${pre}.${n + 1}.1`, b);
  });
  const m = dims[dims.length - 1];
  x = resBlock(ctx, x, "mid_block1", m);
  x = attend(ctx, x, "mid_attn", config.middleAttention);
  x = resBlock(ctx, x, "mid_block2", m);
  [...pairs].reverse().forEach(([a, b], i) => {
    const pre = `ups.${i}`;
    for (let j = 0; j < n; j++) {
      x = resBlock(ctx, concat(g, x, skips.pop()!, `${pre}.${j}.in`), `${pre}.${j}`, b);
    }
    x = attend(ctx, x, `${pre}.${n}`, kindAt(pairs.length - 1 - i));
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
    metadata: { "ddpm-lab.model": JSON.stringify(config), ...options.metadata },
  });
}
