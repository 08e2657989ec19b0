/**
 * The U-Net as a graph of layer ops, traced from the one description of the network
 * (./unet.ts): `traceUnet` runs `Unet.forward` over a graph-building {@link LayerOps} that
 * records each call as a node with its inputs, its parameters (by state-dict name), its
 * attributes and its output shape. The WebGPU engine (src/gpu) compiles the graph into a static
 * plan of kernels; the ONNX exporter (src/onnx) emits ONNX nodes per layer op. Nothing of the
 * network is described again there.
 *
 * Shapes are NHWC ([B, H, W, C]) for images and [B, n] for vectors; the batch is fixed at trace
 * time, as the engine's buffers are.
 * @module
 */
import type { AttentionOptions, CrossAttentionOptions, LayerOps } from "./layer_ops.ts";
import type { ParamSpec } from "./params.ts";
import { encodedWidth } from "./conditioning.ts";
import type { Unet } from "./unet.ts";

/** What a node computes (its kind and attributes). */
export type LayerOp =
  | { op: "input"; name: "x" | "t" | "labels" | "drop" }
  | { op: "conv"; param: string; k: number; bias: boolean }
  | { op: "linear"; param: string }
  | { op: "groupNorm"; param: string; groups: number }
  | { op: "silu" }
  | { op: "gelu" }
  | { op: "add" }
  | { op: "scaleShift" }
  | { op: "concat" }
  | { op: "timeEmbedding"; dim: number }
  | { op: "pixelUnshuffle" }
  | { op: "upsample" }
  | ({ op: "linearAttention"; param: string } & AttentionOptions)
  | ({ op: "attention"; param: string } & AttentionOptions)
  | ({ op: "crossAttention"; param: string; tokens: number } & CrossAttentionOptions)
  | { op: "dropout"; rate: number; index: number }
  | { op: "nullTokens"; param: string }
  | { op: "nullMix"; param: string };

/** The kinds of node. */
export type LayerOpKind = LayerOp["op"];

/** One node: its op, the ids of its inputs, and its output shape. */
export type GraphNode = LayerOp & {
  /** Position in `LayerGraph.nodes` (trace order, which is a topological order). */
  id: number;
  /** Ids of the input nodes, in the op's argument order. */
  inputs: number[];
  /** Output shape. */
  shape: number[];
};

/** A traced network. */
export interface LayerGraph {
  /** Every node in trace order; inputs come first. */
  nodes: GraphNode[];
  /** Ids of the input nodes: x [B, H, W, C], t [B]; conditional: labels [B, w], drop [B, 1]. */
  inputs: { x: number; t: number; labels?: number; drop?: number };
  /** Id of the output node ([B, H, W, C]). */
  output: number;
  /** The parameters, in state-dict order. */
  params: readonly ParamSpec[];
  /** Whether dropout nodes were recorded (a training graph). */
  training: boolean;
}

/** The state-dict names of the parameters a node reads, in a fixed order per op. */
export function nodeParams(node: LayerOp): string[] {
  switch (node.op) {
    case "conv":
      return node.bias ? [`${node.param}.weight`, `${node.param}.bias`] : [`${node.param}.weight`];
    case "linear":
    case "groupNorm":
      return [`${node.param}.weight`, `${node.param}.bias`];
    case "linearAttention":
    case "attention":
      return [`${node.param}.to_qkv.weight`];
    case "crossAttention":
      return ["to_q", "to_k", "to_v"].map((n) => `${node.param}.${n}.weight`);
    case "nullTokens":
    case "nullMix":
      return [node.param];
    default:
      return [];
  }
}

/** Number of elements of a shape. */
export function shapeSize(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Records layer-op calls as nodes; node handles are their ids. */
class GraphBuilder implements LayerOps<number> {
  readonly nodes: GraphNode[] = [];
  readonly #params: Map<string, ParamSpec>;
  readonly #training: boolean;
  #dropouts = 0;

  constructor(params: readonly ParamSpec[], training: boolean) {
    this.#params = new Map(params.map((p) => [p.name, p]));
    this.#training = training;
  }

  add(a: number, b: number): number {
    this.#same(a, b, "add");
    return this.#node({ op: "add" }, [a, b], this.shapeOf(a));
  }

  node(op: LayerOp, inputs: number[], shape: number[]): number {
    return this.#node(op, inputs, shape);
  }

  shapeOf(id: number): number[] {
    return [...this.nodes[id].shape];
  }

  conv(x: number, prefix: string, options: { bias: boolean }): number {
    const [k, , cin, cout] = this.#param(`${prefix}.weight`);
    const [b, h, w, c] = this.shapeOf(x);
    if (c !== cin) throw new Error(`trace: ${prefix} takes ${cin} channels, got ${c}`);
    return this.#node({ op: "conv", param: prefix, k, bias: options.bias }, [x], [b, h, w, cout]);
  }

  linear(x: number, prefix: string): number {
    const [cin, cout] = this.#param(`${prefix}.weight`);
    const [b, c] = this.shapeOf(x);
    if (c !== cin) throw new Error(`trace: ${prefix} takes ${cin} features, got ${c}`);
    return this.#node({ op: "linear", param: prefix }, [x], [b, cout]);
  }

  groupNorm(x: number, prefix: string, groups: number): number {
    this.#param(`${prefix}.weight`);
    return this.#node({ op: "groupNorm", param: prefix, groups }, [x], this.shapeOf(x));
  }

  silu(x: number): number {
    return this.#node({ op: "silu" }, [x], this.shapeOf(x));
  }

  gelu(x: number): number {
    return this.#node({ op: "gelu" }, [x], this.shapeOf(x));
  }

  scaleShift(h: number, ss: number): number {
    const shape = this.shapeOf(h);
    const [b, c2] = this.shapeOf(ss);
    if (b !== shape[0] || c2 !== 2 * shape[3]) {
      throw new Error(`trace: scale-shift of [${c2}] for [${shape}]`);
    }
    return this.#node({ op: "scaleShift" }, [h, ss], shape);
  }

  concat(a: number, b: number): number {
    const [n, h, w, ca] = this.shapeOf(a);
    const cb = this.shapeOf(b)[3];
    return this.#node({ op: "concat" }, [a, b], [n, h, w, ca + cb]);
  }

  timeEmbedding(t: number, dim: number): number {
    return this.#node({ op: "timeEmbedding", dim }, [t], [this.shapeOf(t)[0], dim]);
  }

  pixelUnshuffle(x: number): number {
    const [b, h, w, c] = this.shapeOf(x);
    return this.#node({ op: "pixelUnshuffle" }, [x], [b, h / 2, w / 2, 4 * c]);
  }

  upsample(x: number): number {
    const [b, h, w, c] = this.shapeOf(x);
    return this.#node({ op: "upsample" }, [x], [b, 2 * h, 2 * w, c]);
  }

  linearAttention(x: number, prefix: string, options: AttentionOptions): number {
    return this.#attention("linearAttention", x, prefix, options);
  }

  attention(x: number, prefix: string, options: AttentionOptions): number {
    return this.#attention("attention", x, prefix, options);
  }

  crossAttention(
    x: number,
    tokens: number,
    prefix: string,
    options: CrossAttentionOptions,
  ): number {
    const [b, h, w] = this.shapeOf(x);
    const { heads, dimHead, width } = options;
    const count = this.shapeOf(tokens)[1] / width;
    return this.#node(
      { op: "crossAttention", param: prefix, heads, dimHead, width, tokens: count },
      [x, tokens],
      [b, h, w, heads * dimHead],
    );
  }

  dropout(x: number, rate: number): number {
    if (!this.#training || rate <= 0) return x;
    return this.#node({ op: "dropout", rate, index: this.#dropouts++ }, [x], this.shapeOf(x));
  }

  nullTokens(name: string, like: number): number {
    const [n] = this.#param(name);
    return this.#node({ op: "nullTokens", param: name }, [like], [this.shapeOf(like)[0], n]);
  }

  nullMix(h: number, name: string, drop: number): number {
    this.#param(name);
    return this.#node({ op: "nullMix", param: name }, [h, drop], this.shapeOf(h));
  }

  #attention(
    op: "linearAttention" | "attention",
    x: number,
    prefix: string,
    options: AttentionOptions,
  ): number {
    const [b, h, w] = this.shapeOf(x);
    const { heads, dimHead } = options;
    this.#param(`${prefix}.to_qkv.weight`);
    return this.#node({ op, param: prefix, heads, dimHead }, [x], [b, h, w, heads * dimHead]);
  }

  #param(name: string): number[] {
    const spec = this.#params.get(name);
    if (!spec) throw new Error(`trace: the network declares no parameter ${name}`);
    return spec.shape;
  }

  #same(a: number, b: number, what: string): void {
    const sa = this.shapeOf(a).join("x");
    const sb = this.shapeOf(b).join("x");
    if (sa !== sb) throw new Error(`trace: ${what} of [${sa}] and [${sb}]`);
  }

  #node(op: LayerOp, inputs: number[], shape: number[]): number {
    const id = this.nodes.length;
    this.nodes.push({ ...op, id, inputs, shape } as GraphNode);
    return id;
  }
}

/** Options of a trace. */
export interface TraceOptions {
  /** Examples per batch (fixed: the engine's buffers are sized for it). */
  batch: number;
  /** Image side (square images). */
  size: number;
  /** Image channels. */
  channels: number;
  /** A training graph records the residual blocks' dropout; a sampling graph has none. */
  training: boolean;
}

/**
 * The layer graph of `net` for a batch of `options.batch` images. A conditional network's
 * graph always has the labels and drop inputs (drop = 1 everywhere gives the null embedding,
 * exactly, which is how an engine computes the unconditional branch of guidance).
 */
export function traceUnet(net: Unet, options: TraceOptions): LayerGraph {
  const { batch, size, channels, training } = options;
  const g = new GraphBuilder(net.params, training);
  const x = g.node({ op: "input", name: "x" }, [], [batch, size, size, channels]);
  const t = g.node({ op: "input", name: "t" }, [], [batch]);
  const inputs: LayerGraph["inputs"] = { x, t };
  const shape = net.condition;
  if (shape) {
    inputs.labels = g.node({ op: "input", name: "labels" }, [], [batch, encodedWidth(shape)]);
    inputs.drop = g.node({ op: "input", name: "drop" }, [], [batch, 1]);
  }
  const output = net.forward<number>(x, t, {
    ops: g,
    condition: shape ? { labels: inputs.labels!, drop: inputs.drop! } : undefined,
  });
  return { nodes: g.nodes, inputs, output, params: net.params, training };
}

/** For each node, the ids of the nodes that read it (in node order). */
export function consumers(graph: LayerGraph): number[][] {
  const out: number[][] = graph.nodes.map(() => []);
  for (const node of graph.nodes) for (const i of node.inputs) out[i].push(node.id);
  return out;
}

/**
 * Replays `graph` through `ops` (e.g. tfjs's, to check the trace, or an exporter's): the
 * output for the given input values. Dropout nodes call `ops.dropout` in trace order.
 */
export function replayGraph<T>(
  graph: LayerGraph,
  ops: LayerOps<T>,
  inputs: { x: T; t: T; labels?: T; drop?: T },
): T {
  const values: T[] = [];
  for (const node of graph.nodes) {
    const a = node.inputs.map((i) => values[i]);
    values[node.id] = replayNode(node, ops, a, inputs);
  }
  return values[graph.output];
}

function replayNode<T>(
  node: GraphNode,
  ops: LayerOps<T>,
  a: T[],
  inputs: { x: T; t: T; labels?: T; drop?: T },
): T {
  switch (node.op) {
    case "input": {
      const v = inputs[node.name];
      if (v === undefined) throw new Error(`replay: no value for the input ${node.name}`);
      return v;
    }
    case "conv":
      return ops.conv(a[0], node.param, { bias: node.bias });
    case "linear":
      return ops.linear(a[0], node.param);
    case "groupNorm":
      return ops.groupNorm(a[0], node.param, node.groups);
    case "silu":
      return ops.silu(a[0]);
    case "gelu":
      return ops.gelu(a[0]);
    case "add":
      return ops.add(a[0], a[1]);
    case "scaleShift":
      return ops.scaleShift(a[0], a[1]);
    case "concat":
      return ops.concat(a[0], a[1]);
    case "timeEmbedding":
      return ops.timeEmbedding(a[0], node.dim);
    case "pixelUnshuffle":
      return ops.pixelUnshuffle(a[0]);
    case "upsample":
      return ops.upsample(a[0]);
    case "linearAttention":
      return ops.linearAttention(a[0], node.param, node);
    case "attention":
      return ops.attention(a[0], node.param, node);
    case "crossAttention":
      return ops.crossAttention(a[0], a[1], node.param, node);
    case "dropout":
      return ops.dropout(a[0], node.rate);
    case "nullTokens":
      return ops.nullTokens(node.param, a[0]);
    case "nullMix":
      return ops.nullMix(a[0], node.param, a[1]);
  }
}
