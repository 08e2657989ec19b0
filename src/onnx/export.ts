/**
 * The U-Net as an ONNX graph, emitted from its traced layer graph (src/model/graph.ts): the
 * network is described once, by `Unet.forward`; here each layer op becomes a few ONNX nodes over
 * weights given by PyTorch state-dict name in this library's layout (conv HWIO, linear
 * [in, out], as `checkpoint/model.safetensors` stores them).
 *
 * The graph takes `x` [batch, size, size, channels] (NHWC, like the rest of ddpm-lab) and float
 * timesteps `t` [batch], and returns `out` of the shape of `x`; the batch is symbolic (the trace
 * is made at batch 1 and every reshape keeps dimension 0), inside it runs NCHW. A conditional
 * model also takes `condition` [batch, E], the encoded labels (`encodeLabels`), and `uncond`
 * [batch], 1 where the null embedding replaces them (the graph's drop input), so that one
 * session serves both halves of classifier-free guidance; its `metadata_props` record the
 * attributes, their sizes and the encoding. Rewrites that ORT runs faster, all exact up to
 * float32 rounding:
 * - GroupNorm as Reshape + InstanceNormalization + per-channel affine (opset 17 has no
 *   GroupNormalization whose scale is per channel);
 * - attention products as MatMul (ORT runs Einsum slowly), `to_qkv` as three 1x1 convs;
 * - the attention scales folded into the q weights (full, cross) or the v weights (linear);
 * - `pixel_unshuffle` as SpaceToDepth, whose channel order the next conv's weight absorbs;
 * - a residual block's time projection (the linear feeding scale-shift) as two Gemms, scale and
 *   shift, with the `scale + 1` folded into the scale's bias;
 * - nodes of the trace that compute the same thing (each block's SiLU of the time embedding)
 *   emitted once.
 * A sampling trace has no dropout.
 * @module
 */
import type { ModelConfig } from "../../schemas/experiment.ts";
import { type NamedArray, permute4 } from "../io/safetensors.ts";
import { type GraphNode, type LayerGraph, traceUnet } from "../model/graph.ts";
import { modelShape } from "../model/mod.ts";
import type { ParamSpec } from "../model/params.ts";
import { Unet } from "../model/unet.ts";
import { GraphBuilder } from "./graph.ts";

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

/**
 * The serialised ONNX model of the U-Net `config` with `weights` (by PyTorch state-dict name,
 * this library's layout). Throws when a weight is missing, has another shape than the config
 * implies, or is not a parameter of the config's network (a config that does not match the
 * checkpoint).
 */
export function buildUnetOnnx(
  config: ModelConfig,
  weights: Map<string, NamedArray>,
  options: UnetOnnxOptions,
): Uint8Array {
  const { size, labelSizes } = options;
  const cond = config.conditioning;
  if (cond && !labelSizes) {
    throw new Error("onnx export: a conditional model needs the label sizes (labelSizes)");
  }
  if (size % 2 ** (config.multipliers.length - 1) !== 0) {
    throw new Error(
      `onnx export: size ${size} is not divisible by 2^${config.multipliers.length - 1}`,
    );
  }
  const net = new Unet(modelShape(config, labelSizes));
  const graph = traceUnet(net, { batch: 1, size, channels: config.channels, training: false });
  const reader = new WeightReader(weights, graph.params);
  const unused = reader.unused();
  if (unused.length > 0) {
    throw new Error(
      `onnx export: ${unused.length} weights are not part of the model config's network ` +
        `(${unused.slice(0, 5).join(", ")}${unused.length > 5 ? ", ..." : ""})`,
    );
  }
  const g = new GraphBuilder();
  const out = emitGraph(g, reader, graph);
  g.output(out, "out", ["batch", size, size, config.channels]);
  return g.encode({
    graphName: "ddpm_lab_unet",
    metadata: {
      "ddpm-lab.model": JSON.stringify(config),
      ...(cond
        ? {
          "ddpm-lab.condition": JSON.stringify({
            attributes: cond.attributes,
            sizes: labelSizes,
            encoding: cond.encoding,
          }),
        }
        : {}),
      ...options.metadata,
    },
  });
}

/** Reads weights by name, checking them against the network's parameters. */
class WeightReader {
  readonly #weights: Map<string, NamedArray>;
  readonly #shapes: Map<string, number[]>;

  constructor(weights: Map<string, NamedArray>, params: readonly ParamSpec[]) {
    this.#weights = weights;
    this.#shapes = new Map(params.map((p) => [p.name, p.shape]));
  }

  /** The weight `name`; throws when it is missing or its shape is not the parameter's. */
  get(name: string): NamedArray {
    const shape = this.#shapes.get(name);
    if (!shape) throw new Error(`onnx export: the network has no parameter ${name}`);
    const a = this.#weights.get(name);
    if (!a) throw new Error(`onnx export: the weights have no ${name} (shape [${shape}] expected)`);
    if (a.shape.join("x") !== shape.join("x")) {
      throw new Error(
        `onnx export: ${name} has shape [${a.shape}], the model config needs [${shape}]`,
      );
    }
    return a;
  }

  /** Names of the weights that are no parameter of the network, in the weights' order. */
  unused(): string[] {
    return [...this.#weights.keys()].filter((k) => !this.#shapes.has(k));
  }
}

/**
 * A node's value in the ONNX graph. `perm` (after SpaceToDepth): channel j holds channel
 * `perm[j]` of the layer op's output; a conv absorbs it into its weight, other ops get the
 * channels reordered first.
 */
interface Value {
  name: string;
  perm?: Int32Array;
}

/** What the emission of one node reads. */
interface Emitter {
  g: GraphBuilder;
  weights: WeightReader;
  /** The value of node `id` (emitted earlier). */
  value(id: number): Value;
  /** The node whose value stands for node `id` (itself, or an equal one traced earlier). */
  canonical(id: number): GraphNode;
}

/**
 * Emits the nodes of `graph` (equal nodes once, the linears that feed a scale-shift inside it)
 * and returns the name of the NHWC output. Order: the nodes that do not depend on x (the time
 * and label embeddings) first, then the image path, each in trace order.
 */
function emitGraph(g: GraphBuilder, weights: WeightReader, graph: LayerGraph): string {
  const { nodes } = graph;
  const same = canonicalIds(nodes);
  const readers: GraphNode[][] = nodes.map(() => []);
  for (const node of nodes.filter((n) => same[n.id] === n.id)) {
    for (const i of node.inputs) readers[same[i]].push(node);
  }
  const absorbed = (node: GraphNode): boolean =>
    node.op === "linear" && readers[node.id].length > 0 &&
    readers[node.id].every((r) => r.op === "scaleShift" && same[r.inputs[1]] === node.id);
  const onX: boolean[] = [];
  for (const n of nodes) {
    onX[n.id] = n.op === "input" ? n.name === "x" : n.inputs.some((i) => onX[i]);
  }
  const order = [...nodes.filter((n) => !onX[n.id]), ...nodes.filter((n) => onX[n.id])]
    .filter((n) => same[n.id] === n.id && !absorbed(n));

  const inputs = graphInputs(g, graph);
  const values = new Map<number, Value>();
  const e: Emitter = {
    g,
    weights,
    value: (id) => values.get(same[id])!,
    canonical: (id) => nodes[same[id]],
  };
  for (const node of order) {
    values.set(node.id, node.op === "input" ? inputs(node.name) : emitNode(e, node));
  }
  const out = plain(e, e.value(graph.output));
  return g.node("Transpose", [out], { name: "out.nhwc", attributes: { perm: [0, 2, 3, 1] } });
}

/** For each node, the id of the first node with the same op, attributes and inputs. */
function canonicalIds(nodes: readonly GraphNode[]): number[] {
  const same: number[] = [];
  const seen = new Map<string, number>();
  for (const node of nodes) {
    const { id: _id, inputs, shape: _shape, ...op } = node;
    const key = JSON.stringify([op, inputs.map((i) => same[i])]);
    same[node.id] = seen.get(key) ?? node.id;
    if (!seen.has(key)) seen.set(key, node.id);
  }
  return same;
}

/**
 * Declares the graph inputs (x, t; conditional: condition, uncond) and returns the value of
 * each input node: x as NCHW, drop [B, 1] from `uncond` [batch].
 */
function graphInputs(g: GraphBuilder, graph: LayerGraph): (name: string) => Value {
  const { nodes, inputs } = graph;
  const [, size, , channels] = nodes[inputs.x].shape;
  const x = g.input("x", ["batch", size, size, channels]);
  const t = g.input("t", ["batch"]);
  const labels = inputs.labels === undefined
    ? undefined
    : g.input("condition", ["batch", nodes[inputs.labels].shape[1]]);
  const uncond = inputs.drop === undefined ? undefined : g.input("uncond", ["batch"]);
  return (name) => {
    if (name === "x") {
      return {
        name: g.node("Transpose", [x], { name: "x.nchw", attributes: { perm: [0, 3, 1, 2] } }),
      };
    }
    if (name === "t") return { name: t };
    if (name === "labels" && labels) return { name: labels };
    if (name === "drop" && uncond) {
      return {
        name: g.node("Unsqueeze", [uncond, g.int64("uncond.axes", [1])], { name: "uncond.column" }),
      };
    }
    throw new Error(`onnx export: the graph has no input ${name}`);
  };
}

/** The ONNX nodes of one layer op; returns its value. */
function emitNode(e: Emitter, node: GraphNode): Value {
  const { g } = e;
  const x = (i: number): string => plain(e, e.value(node.inputs[i]));
  switch (node.op) {
    case "conv": {
      const v = e.value(node.inputs[0]);
      const hwio = e.weights.get(`${node.param}.weight`);
      const [k, , cin, cout] = hwio.shape;
      const w = toOihw(hwio);
      const bias = node.bias ? e.weights.get(`${node.param}.bias`).data : undefined;
      const weight = v.perm ? permuteInputs(w, v.perm, { cout, cin, k }) : w;
      return { name: convNode(g, v.name, { name: node.param, weight, k, cout, cin, bias }) };
    }
    case "linear":
      return { name: gemm(e, x(0), node.param) };
    case "groupNorm":
      return { name: groupNorm(e, x(0), node) };
    case "silu":
      return { name: silu(g, x(0), "silu") };
    case "gelu":
      return { name: gelu(g, x(0), "gelu") };
    case "add":
      return { name: g.node("Add", [x(0), x(1)], { name: "add" }) };
    case "scaleShift":
      return { name: scaleShift(e, x(0), node) };
    case "concat":
      return { name: g.node("Concat", [x(0), x(1)], { name: "concat", attributes: { axis: 1 } }) };
    case "timeEmbedding":
      return { name: timeEmbedding(g, x(0), node.dim) };
    case "pixelUnshuffle":
      return pixelUnshuffle(g, x(0), node.shape[3] / 4);
    case "upsample": {
      const scales = g.float("upsample.scales", Float32Array.of(1, 1, 2, 2), [4]);
      return {
        name: g.node("Resize", [x(0), "", scales], {
          name: "upsample",
          attributes: {
            mode: "nearest",
            coordinate_transformation_mode: "asymmetric",
            nearest_mode: "floor",
          },
        }),
      };
    }
    case "linearAttention":
      return { name: linearAttention(e, x(0), node) };
    case "attention":
      return { name: fullAttention(e, x(0), node) };
    case "crossAttention":
      return { name: crossAttention(e, [x(0), x(1)], node) };
    case "nullMix": {
      const [h, m] = [x(0), x(1)];
      const nullEmb = e.weights.get(node.param);
      const keep = g.node("Sub", [g.float("one", Float32Array.of(1), []), m], { name: "keep" });
      return {
        name: g.node("Add", [
          g.node("Mul", [h, keep], { name: `${node.param}.kept` }),
          g.node("Mul", [g.float(node.param, nullEmb.data, [1, nullEmb.data.length]), m], {
            name: `${node.param}.mixed`,
          }),
        ], { name: "label_embedding" }),
      };
    }
    case "input":
    case "dropout":
    case "nullTokens":
      // Inputs are declared up front; a sampling trace of a conditional network always has
      // its labels (no nullTokens), and none has dropout.
      throw new Error(`onnx export: no ${node.op} node in a sampling graph`);
  }
}

/** The name of `v` with its channels in the layer op's order. */
function plain(e: Emitter, v: Value): string {
  if (!v.perm) return v.name;
  const inverse = new Array<number>(v.perm.length);
  v.perm.forEach((logical, j) => (inverse[logical] = j));
  return e.g.node("Gather", [v.name, e.g.int64("unpermute", inverse)], {
    name: "unpermute",
    attributes: { axis: 1 },
  });
}

/** HWIO [kh, kw, i, o] -> OIHW [o, i, kh, kw]. */
function toOihw(a: NamedArray): Float32Array {
  return permute4(a, [3, 2, 0, 1]).data;
}

/** OIHW weight for an input whose channel j holds channel perm[j]. */
function permuteInputs(
  w: Float32Array,
  perm: Int32Array,
  dims: { cout: number; cin: number; k: number },
): Float32Array {
  const { cout, cin, k } = dims;
  const out = new Float32Array(w.length);
  const kk = k * k;
  for (let o = 0; o < cout; o++) {
    for (let j = 0; j < cin; j++) {
      const src = (o * cin + perm[j]) * kk;
      out.set(w.subarray(src, src + kk), (o * cin + j) * kk);
    }
  }
  return out;
}

/** Conv k x k, stride 1, 'same' padding, of an OIHW weight and an optional bias. */
function convNode(
  g: GraphBuilder,
  x: string,
  options: {
    name: string;
    weight: Float32Array;
    k: number;
    cin: number;
    cout: number;
    bias?: Float32Array;
  },
): string {
  const { name, k, cin, cout, bias } = options;
  const inputs = [x, g.float(`${name}.weight`, options.weight, [cout, cin, k, k])];
  if (bias) inputs.push(g.float(`${name}.bias`, bias, [cout]));
  const p = (k - 1) / 2;
  return g.node("Conv", inputs, {
    name,
    attributes: { kernel_shape: [k, k], pads: [p, p, p, p], strides: [1, 1] },
  });
}

/** `x @ W + b` on [B, in] from `<prefix>.weight` ([in, out]) and `<prefix>.bias`. */
function gemm(e: Emitter, x: string, prefix: string): string {
  const w = e.weights.get(`${prefix}.weight`);
  const b = e.weights.get(`${prefix}.bias`);
  return e.g.node("Gemm", [
    x,
    e.g.float(`${prefix}.weight`, w.data, w.shape),
    e.g.float(`${prefix}.bias`, b.data, b.shape),
  ], { name: prefix });
}

/** x · sigmoid(x). */
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

/** GroupNorm as Reshape + InstanceNormalization + per-channel affine, on NCHW. */
function groupNorm(e: Emitter, x: string, node: GraphNode & { op: "groupNorm" }): string {
  const { g } = e;
  const { param: prefix, groups } = node;
  const [, h, w, c] = node.shape;
  const grouped = g.node("Reshape", [x, g.int64(`${prefix}.grouped`, [0, groups, -1])], {
    name: `${prefix}.grouped`,
  });
  const normed = g.node("InstanceNormalization", [
    grouped,
    g.float(`${prefix}.ones`, new Float32Array(groups).fill(1), [groups]),
    g.float(`${prefix}.zeros`, new Float32Array(groups), [groups]),
  ], { name: `${prefix}.normed`, attributes: { epsilon: { float: 1e-5 } } });
  const back = g.node("Reshape", [normed, g.int64(`${prefix}.shape`, [-1, c, h, w])], {
    name: `${prefix}.ungrouped`,
  });
  const gamma = g.float(`${prefix}.weight`, e.weights.get(`${prefix}.weight`).data, [c, 1, 1]);
  const beta = g.float(`${prefix}.bias`, e.weights.get(`${prefix}.bias`).data, [c, 1, 1]);
  const scaled = g.node("Mul", [back, gamma], { name: `${prefix}.scaled` });
  return g.node("Add", [scaled, beta], { name: prefix });
}

/**
 * h · (1 + scale) + shift, (scale, shift) the halves of a linear's output: that linear (the
 * trace's ss input) is emitted here as two Gemms of its weight's halves, `+ 1` in the scale's
 * bias.
 */
function scaleShift(e: Emitter, h: string, node: GraphNode): string {
  const { g } = e;
  const linear = e.canonical(node.inputs[1]);
  if (linear.op !== "linear") {
    throw new Error("onnx export: a scale-shift whose scale and shift are not a linear's output");
  }
  const prefix = linear.param;
  const act = plain(e, e.value(linear.inputs[0]));
  const w = e.weights.get(`${prefix}.weight`);
  const bias = e.weights.get(`${prefix}.bias`).data;
  const [td, b2] = w.shape;
  const b = b2 / 2;
  const scaleW = new Float32Array(td * b);
  const shiftW = new Float32Array(td * b);
  for (let i = 0; i < td; i++) {
    scaleW.set(w.data.subarray(i * b2, i * b2 + b), i * b);
    shiftW.set(w.data.subarray(i * b2 + b, (i + 1) * b2), i * b);
  }
  const column = (name: string, wData: Float32Array, bData: Float32Array): string => {
    const y = g.node("Gemm", [
      act,
      g.float(`${prefix}.${name}.weight`, wData, [td, b]),
      g.float(`${prefix}.${name}.bias`, bData, [b]),
    ], { name: `${prefix}.${name}` });
    return g.node("Reshape", [y, g.int64(`${prefix}.${name}.shape`, [-1, b, 1, 1])], {
      name: `${prefix}.${name}.column`,
    });
  };
  const scale = column("scale", scaleW, bias.slice(0, b).map((v) => v + 1));
  const shift = column("shift", shiftW, bias.slice(b));
  return g.node("Add", [
    g.node("Mul", [h, scale], { name: `${prefix}.scaled` }),
    shift,
  ], { name: `${prefix}.shifted` });
}

/** The sinusoidal embedding [B, dim] of t [B]: all sines, then all cosines. */
function timeEmbedding(g: GraphBuilder, t: string, dim: number): string {
  const half = dim / 2;
  const freqs = new Float32Array(half);
  const scale = Math.log(10000) / (half - 1);
  for (let i = 0; i < half; i++) freqs[i] = Math.exp(-scale * i);
  const col = g.node("Unsqueeze", [t, g.int64("time.axes", [1])], { name: "time.column" });
  const args = g.node("Mul", [col, g.float("time.freqs", freqs, [1, half])], { name: "time.args" });
  return g.node("Concat", [
    g.node("Sin", [args], { name: "time.sin" }),
    g.node("Cos", [args], { name: "time.cos" }),
  ], { name: "time.embedding", attributes: { axis: 1 } });
}

/**
 * pixel_unshuffle(2) as SpaceToDepth, whose channel j = p · C + c is channel c · 4 + p of
 * pixel_unshuffle's (c, p1, p2) order.
 */
function pixelUnshuffle(g: GraphBuilder, x: string, c: number): Value {
  const name = g.node("SpaceToDepth", [x], {
    name: "space_to_depth",
    attributes: { blocksize: 2 },
  });
  const perm = new Int32Array(4 * c);
  for (let p = 0; p < 4; p++) for (let ch = 0; ch < c; ch++) perm[p * c + ch] = ch * 4 + p;
  return { name, perm };
}

/** q, k, v of the `to_qkv` 1x1 conv as three convs, [B, heads, dimHead, HW] each, scaled. */
function qkvHeads(
  e: Emitter,
  x: string,
  node: GraphNode & { op: "linearAttention" | "attention"; param: string },
  scales: number[],
): string[] {
  const { param: prefix, heads, dimHead } = node;
  const [, h, w, hidden] = node.shape;
  const weight = e.weights.get(`${prefix}.to_qkv.weight`);
  const cin = weight.shape[2];
  const oihw = toOihw(weight);
  return ["q", "k", "v"].map((part, i) => {
    const third = oihw.slice(i * hidden * cin, (i + 1) * hidden * cin);
    const y = convNode(e.g, x, {
      name: `${prefix}.to_qkv.${part}`,
      weight: scales[i] === 1 ? third : third.map((v) => v * scales[i]),
      k: 1,
      cin,
      cout: hidden,
    });
    return splitHeads(e.g, y, { heads, dimHead, n: h * w, name: `${prefix}.${part}` });
  });
}

/** [B, heads · dimHead, H, W] -> [B, heads, dimHead, HW]. */
function splitHeads(
  g: GraphBuilder,
  x: string,
  options: { heads: number; dimHead: number; n: number; name: string },
): string {
  const { heads, dimHead, n, name } = options;
  return g.node("Reshape", [x, g.int64(`${name}.shape`, [-1, heads, dimHead, n])], { name });
}

/** [B, heads, dimHead, HW] -> [B, heads · dimHead, H, W] (channel = head · dimHead + e). */
function mergeHeads(g: GraphBuilder, x: string, node: GraphNode & { param: string }): string {
  const [, h, w, hidden] = node.shape;
  const shape = g.int64(`${node.param}.merged.shape`, [-1, hidden, h, w]);
  return g.node("Reshape", [x, shape], { name: `${node.param}.merged` });
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
  const ex = g.node("Exp", [shifted], { name: `${name}.exp` });
  const sum = g.node("ReduceSum", [ex, g.int64(`${name}.axes`, [2])], {
    name: `${name}.sum`,
    attributes: { keepdims: 1 },
  });
  return g.node("Div", [ex, sum], { name });
}

const TRANSPOSE_LAST = { perm: [0, 1, 3, 2] };

/**
 * Linear attention up to `to_out`: q softmaxed over the head channels, k over positions,
 * out = (k vᵀ)ᵀ q computed as (v kᵀ) q; q's scale, which scales out linearly, is in v.
 */
function linearAttention(
  e: Emitter,
  x: string,
  node: GraphNode & { op: "linearAttention" },
): string {
  const { g } = e;
  const p = node.param;
  const [q0, k0, v] = qkvHeads(e, x, node, [1, 1, node.dimHead ** -0.5]);
  const q = softmaxMiddle(g, q0, `${p}.q.softmax`);
  const k = g.node("Softmax", [k0], { name: `${p}.k.softmax`, attributes: { axis: 3 } });
  const kT = g.node("Transpose", [k], { name: `${p}.k.t`, attributes: TRANSPOSE_LAST });
  const contextT = g.node("MatMul", [v, kT], { name: `${p}.context_t` }); // [B, h, e, d]
  const out = g.node("MatMul", [contextT, q], { name: `${p}.out` }); // [B, h, e, n]
  return mergeHeads(g, out, node);
}

/** Softmax attention over the HW tokens up to `to_out` (the scale folded into q). */
function fullAttention(e: Emitter, x: string, node: GraphNode & { op: "attention" }): string {
  const { g } = e;
  const p = node.param;
  const [q, k, v] = qkvHeads(e, x, node, [node.dimHead ** -0.5, 1, 1]);
  const qT = g.node("Transpose", [q], { name: `${p}.q.t`, attributes: TRANSPOSE_LAST });
  const sim = g.node("MatMul", [qT, k], { name: `${p}.sim` }); // [B, h, n, n]
  const attn = g.node("Softmax", [sim], { name: `${p}.attn`, attributes: { axis: 3 } });
  const vT = g.node("Transpose", [v], { name: `${p}.v.t`, attributes: TRANSPOSE_LAST });
  const out = g.node("MatMul", [attn, vT], { name: `${p}.out` }); // [B, h, n, e]
  const outT = g.node("Transpose", [out], { name: `${p}.out.t`, attributes: TRANSPOSE_LAST });
  return mergeHeads(g, outT, node);
}

/**
 * Cross-attention of x to the label tokens up to `to_out`: softmax(q kᵀ / √dimHead) v, q the
 * bias-free 1x1 conv `to_q` (the scale folded into it), k and v bias-free linears of the tokens.
 */
function crossAttention(
  e: Emitter,
  [x, context]: [string, string],
  node: GraphNode & { op: "crossAttention" },
): string {
  const { g } = e;
  const { param: p, heads, dimHead, width, tokens } = node;
  const [, h, w, hidden] = node.shape;
  const qWeight = e.weights.get(`${p}.to_q.weight`);
  const cin = qWeight.shape[2];
  const scale = dimHead ** -0.5;
  const q = convNode(g, x, {
    name: `${p}.to_q`,
    weight: toOihw(qWeight).map((v) => v * scale),
    k: 1,
    cin,
    cout: hidden,
  });
  const qHeads = splitHeads(g, q, { heads, dimHead, n: h * w, name: `${p}.q` });
  const qT = g.node("Transpose", [qHeads], { name: `${p}.q.t`, attributes: TRANSPOSE_LAST });
  const rows = g.node("Reshape", [context, g.int64(`${p}.tokens`, [-1, width])], {
    name: `${p}.tokens`,
  }); // [B * tokens, width]
  const project = (name: "to_k" | "to_v", perm: number[]): string => {
    const weight = e.weights.get(`${p}.${name}.weight`);
    const y = g.node("MatMul", [rows, g.float(`${p}.${name}.weight`, weight.data, weight.shape)], {
      name: `${p}.${name}`,
    });
    const split = g.node("Reshape", [
      y,
      g.int64(`${p}.${name}.shape`, [-1, tokens, heads, dimHead]),
    ], { name: `${p}.${name}.split` });
    return g.node("Transpose", [split], { name: `${p}.${name}.t`, attributes: { perm } });
  };
  const k = project("to_k", [0, 2, 3, 1]); // [B, h, e, tokens]
  const v = project("to_v", [0, 2, 1, 3]); // [B, h, tokens, e]
  const sim = g.node("MatMul", [qT, k], { name: `${p}.sim` }); // [B, h, n, tokens]
  const attn = g.node("Softmax", [sim], { name: `${p}.attn`, attributes: { axis: 3 } });
  const out = g.node("MatMul", [attn, v], { name: `${p}.out` }); // [B, h, n, e]
  const outT = g.node("Transpose", [out], { name: `${p}.out.t`, attributes: TRANSPOSE_LAST });
  return mergeHeads(g, outT, node);
}
