/**
 * The lowering of the attention nodes (linear, full and cross-attention): each is the 1x1
 * projection(s) to q, k, v and the attention kernel of ../kernels/attention.ts up to the merged
 * heads (the graph's `to_out` is a conv node of its own).
 * @module
 */
import type { KernelSpec } from "../kernel.ts";
import type { GraphNode } from "../../model/graph.ts";
import {
  attentionBackward as attentionBackward_,
  attentionForward as attentionForward_,
  crossAttentionBackward,
  crossAttentionForward,
  linearAttentionBackward,
  linearAttentionForward,
} from "../kernels/attention.ts";
import { convForward, convInputGrad, convWeightGrad } from "../kernels/conv.ts";
import { linearForward, linearInputGrad, linearWeightGrad } from "../kernels/matmul.ts";
import type { Emit, Env, Lowered, Ref } from "./types.ts";

/** What the forward lowering of an attention node reads. */
export interface AttentionForwardContext {
  /** Every node (for shapes). */
  nodes: GraphNode[];
  /** The values of the node's inputs. */
  inputs: Ref[];
  /** Emits kernels. */
  emit: Emit;
  /** A parameter's range. */
  param: (name: string) => Ref;
}

/** What the backward lowering reads besides the forward's context. */
export interface AttentionBackwardContext extends AttentionForwardContext {
  /** The gradient of the node's output. */
  dy: Ref;
  /** What the forward saved. */
  saved: Env;
  /** A parameter gradient's range. */
  paramGrad: (name: string) => Ref;
  /** Routes the gradient output `name` of `build` into the node's input `input` (0 or 1). */
  into: (
    input: number,
    build: (accumulate: boolean) => KernelSpec | KernelSpec[],
    env: Env,
    name: string,
  ) => void;
}

/** Everything of a forward env the backward reads: not the scratch. */
function keep(env: Env): Env {
  return Object.fromEntries(Object.entries(env).filter(([name]) => !name.startsWith("tmp")));
}

function image(node: GraphNode, nodes: GraphNode[]) {
  const [batch, height, width, channels] = nodes[node.inputs[0]].shape;
  if (node.op !== "linearAttention" && node.op !== "attention" && node.op !== "crossAttention") {
    throw new Error(`plan: ${node.op} is not an attention`);
  }
  const shape = { batch, pixels: height * width, heads: node.heads, dimHead: node.dimHead };
  const hidden = node.heads * node.dimHead;
  return { batch, height, width, channels, shape, hidden, param: node.param };
}

/** The forward of an attention node: its projections, then the attention kernel. */
export function attentionForward(node: GraphNode, ctx: AttentionForwardContext): Lowered {
  const { batch, height, width, channels, shape, hidden, param } = image(node, ctx.nodes);
  const x = ctx.inputs[0];
  if (node.op === "crossAttention") {
    const conv = { batch, height, width, cin: channels, cout: hidden, k: 1 as const };
    const q = ctx.emit(
      convForward(conv, { bias: false }),
      { x, w: ctx.param(`${param}.to_q.weight`) },
      "to_q",
    ).y;
    const lin = { rows: batch * node.tokens, cin: node.width, cout: hidden };
    const tokens = ctx.inputs[1];
    const kv = (name: string) =>
      ctx.emit(linearForward(lin, { bias: false }), {
        x: tokens,
        w: ctx.param(`${param}.${name}.weight`),
      }, name).y;
    const k = kv("to_k");
    const v = kv("to_v");
    const out = ctx.emit(
      crossAttentionForward({ ...shape, tokens: node.tokens }),
      { q, k, v },
      "attention",
    );
    return { y: out.out, saved: keep(out) };
  }
  const conv = { batch, height, width, cin: channels, cout: 3 * hidden, k: 1 as const };
  const qkv = ctx.emit(
    convForward(conv, { bias: false }),
    { x, w: ctx.param(`${param}.to_qkv.weight`) },
    "to_qkv",
  ).y;
  const specs = node.op === "linearAttention"
    ? linearAttentionForward(shape)
    : attentionForward_(shape);
  const out = ctx.emit(specs, { qkv }, "attention");
  return { y: out.out, saved: keep(out) };
}

/** The backward of an attention node: the attention kernel's, then the projections'. */
export function attentionBackward(node: GraphNode, ctx: AttentionBackwardContext): void {
  const { batch, height, width, channels, shape, hidden, param } = image(node, ctx.nodes);
  const x = ctx.inputs[0];
  const { saved } = ctx;
  if (node.op === "crossAttention") {
    const conv = { batch, height, width, cin: channels, cout: hidden, k: 1 as const };
    const grads = ctx.emit(
      crossAttentionBackward({ ...shape, tokens: node.tokens }),
      { ...saved, dout: ctx.dy },
      "attention",
    );
    const wq = `${param}.to_q.weight`;
    ctx.emit(convWeightGrad(conv), { x, dy: grads.dq, dw: ctx.paramGrad(wq) }, "to_q dw");
    ctx.into(0, (accumulate) => convInputGrad(conv, { accumulate }), {
      dy: grads.dq,
      w: ctx.param(wq),
    }, "dx");
    const lin = { rows: batch * node.tokens, cin: node.width, cout: hidden };
    const tokens = ctx.inputs[1];
    for (const [name, dy] of [["to_k", grads.dk], ["to_v", grads.dv]] as const) {
      const w = `${param}.${name}.weight`;
      ctx.emit(linearWeightGrad(lin), { x: tokens, dy, dw: ctx.paramGrad(w) }, `${name} dw`);
      ctx.into(
        1,
        (accumulate) => linearInputGrad(lin, { accumulate }),
        { dy, w: ctx.param(w) },
        "dx",
      );
    }
    return;
  }
  const specs = node.op === "linearAttention"
    ? linearAttentionBackward(shape)
    : attentionBackward_(shape);
  const dqkv = ctx.emit(specs, { ...saved, dout: ctx.dy }, "attention").dqkv;
  const conv = { batch, height, width, cin: channels, cout: 3 * hidden, k: 1 as const };
  const w = `${param}.to_qkv.weight`;
  ctx.emit(convWeightGrad(conv), { x, dy: dqkv, dw: ctx.paramGrad(w) }, "to_qkv dw");
  ctx.into(
    0,
    (accumulate) => convInputGrad(conv, { accumulate }),
    { dy: dqkv, w: ctx.param(w) },
    "dx",
  );
}
