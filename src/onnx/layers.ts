/**
 * The layers the ONNX U-Net is made of (convolutions, linears, GroupNorm, activations, head
 * reshapes), each appending its nodes to a {@link GraphBuilder} and reading its weights by
 * PyTorch state-dict name. Weights are in this library's layout (conv HWIO, linear [in, out]);
 * inside the graph tensors are NCHW.
 * @module
 */
import { type NamedArray, permute4 } from "../io/safetensors.ts";
import type { GraphBuilder } from "./graph.ts";

/** A tensor flowing through the graph: its name and its static NCHW shape (batch excluded). */
export interface Value {
  /** The graph value's name. */
  name: string;
  /** Channels (dimension 1). */
  channels: number;
  /** Height and width. */
  size: number;
}

/** What every layer needs: the graph being built and the weights. */
export interface LayerContext {
  /** The graph being built. */
  g: GraphBuilder;
  /** The weights, by state-dict name. */
  weights: WeightReader;
}

/** Reads weights by name, checking shapes, and remembers which were used. */
export class WeightReader {
  #map: Map<string, NamedArray>;
  #used = new Set<string>();
  constructor(map: Map<string, NamedArray>) {
    this.#map = map;
  }

  /** The weight `name`; throws when it is missing or its shape is not `shape`. */
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

  /** Names never read: weights of another network than the config's. */
  unused(): string[] {
    return [...this.#map.keys()].filter((k) => !this.#used.has(k));
  }
}

/** HWIO [kh, kw, i, o] -> OIHW [o, i, kh, kw]. */
export function toOihw(a: NamedArray): Float32Array {
  return permute4(a, [3, 2, 0, 1]).data;
}

/** Options of {@link conv}. */
export interface ConvOptions {
  /** Kernel size. */
  k: number;
  /** Output channels. */
  cout: number;
  /** Whether `<prefix>.bias` exists (default true). */
  bias?: boolean;
  /** Transforms the OIHW weight before it is stored (scale folding, channel permutation). */
  mapWeight?: (oihw: Float32Array) => Float32Array;
  /** The OIHW weight itself, when it is not `<prefix>.weight` (the thirds of `to_qkv`). */
  weight?: { data: Float32Array };
}

/** Conv2d k x k, stride 1, 'same' padding, from `<prefix>.weight` (HWIO) and `<prefix>.bias`. */
export function conv(ctx: LayerContext, x: Value, prefix: string, options: ConvOptions): Value {
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
export function linear(
  ctx: LayerContext,
  x: string,
  options: { prefix: string; dims: [number, number] },
): string {
  const { prefix, dims } = options;
  const cout = dims[1];
  const w = ctx.g.float(`${prefix}.weight`, ctx.weights.get(`${prefix}.weight`, dims).data, dims);
  const b = ctx.g.float(`${prefix}.bias`, ctx.weights.get(`${prefix}.bias`, [cout]).data, [cout]);
  return ctx.g.node("Gemm", [x, w, b], { name: prefix });
}

/** x · sigmoid(x). */
export function silu(g: GraphBuilder, x: string, name: string): string {
  return g.node("Mul", [x, g.node("Sigmoid", [x], { name: `${name}.sigmoid` })], { name });
}

/** Exact GELU, 0.5 x (1 + erf(x / √2)) (Gelu itself is opset 20). */
export function gelu(g: GraphBuilder, x: string, name: string): string {
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

/**
 * GroupNorm(groups, C), eps 1e-5, affine `<prefix>.weight` / `.bias`, as Reshape +
 * InstanceNormalization + per-channel affine (opset 17 has no GroupNormalization whose scale is
 * per channel).
 */
export function groupNorm(ctx: LayerContext, x: Value, prefix: string, groups: number): Value {
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

/** a + b (same shape). */
export function add(g: GraphBuilder, a: Value, b: Value, name: string): Value {
  return { ...a, name: g.node("Add", [a.name, b.name], { name }) };
}

/** a and b concatenated along the channels. */
export function concat(g: GraphBuilder, a: Value, b: Value, name: string): Value {
  return {
    name: g.node("Concat", [a.name, b.name], { name, attributes: { axis: 1 } }),
    channels: a.channels + b.channels,
    size: a.size,
  };
}

/** [B, heads, dimHead, HW] -> [B, heads * dimHead, H, W] (channel = head * dimHead + e). */
export function mergeHeads(
  g: GraphBuilder,
  x: string,
  options: { heads: number; dimHead: number; size: number; prefix: string },
): Value {
  const { heads, dimHead, size, prefix } = options;
  const hidden = heads * dimHead;
  const name = g.node("Reshape", [
    x,
    g.int64(`${prefix}.merged.shape`, [-1, hidden, size, size]),
  ], { name: `${prefix}.merged` });
  return { name, channels: hidden, size };
}

/** A 1x1 conv output [B, heads * dimHead, H, W] as heads [B, heads, dimHead, HW]. */
export function splitHeads(
  g: GraphBuilder,
  x: Value,
  options: { heads: number; dimHead: number; prefix: string },
): string {
  const { heads, dimHead, prefix } = options;
  return g.node("Reshape", [
    x.name,
    g.int64(`${prefix}.shape`, [-1, heads, dimHead, x.size * x.size]),
  ], { name: prefix });
}
