/**
 * Lowering a traced layer graph (src/model/graph.ts) into the static plan of a step: the
 * sequence of kernel dispatches with, for every binding, the buffer range it reads or writes.
 * Nothing here touches a device, so a plan can be built, counted and checked on any machine.
 *
 * A training plan is: the forward-process sample x_t and the target, the forward pass, the
 * loss (into slot k of a small ring buffer) and its gradient, the backward pass in reverse
 * graph order, the global gradient norm, Adam, and the EMA. A sampling plan is the forward pass
 * alone. Per step, the host writes one input buffer (see {@link InputLayout}); everything else
 * stays on the device.
 *
 * Lowering:
 * - `groupNorm -> scaleShift -> silu` and `groupNorm -> silu` chains become one fused group-norm
 *   kernel when each intermediate has a single consumer (its backward recomputes the
 *   intermediates from x and the saved statistics).
 * - Identical parameter-free nodes on the same input (each residual block's `silu(temb)`) are
 *   computed once; their consumers' gradients accumulate into the one node.
 * - Gradient routing: an activation read by several consumers gets one gradient buffer; in
 *   reverse graph order the first contribution overwrites it, later ones accumulate (through
 *   the kernels' `accumulate`, or a scratch value and an accumulating copy where a kernel's
 *   flag covers outputs in different states). A residual add hands its output gradient to its
 *   first input without a copy; the other input gets a copy. Concat splits its gradient.
 * - Parameter gradients are written once each (every parameter is read by one node) into their
 *   range of the flat gradient buffer.
 *
 * Kernel scratch (`tmp*` bindings) and every intermediate are plan values; ./memory.ts assigns
 * them to shared buffers by liveness.
 * @module
 */
import type { LossConfig } from "../../../schemas/experiment.ts";
import type { GraphNode, LayerGraph } from "../../model/graph.ts";
import { consumers, nodeParams, shapeSize } from "../../model/graph.ts";
import type { KernelSpec } from "../kernel.ts";
import { convForward, convInputGrad, convWeightGrad } from "../kernels/conv.ts";
import { linearForward, linearInputGrad } from "../kernels/matmul.ts";
import { groupNormBackward, groupNormForward } from "../kernels/group_norm.ts";
import {
  add,
  concatChannels,
  copy,
  dropoutBackward,
  dropoutForward,
  geluBackward,
  geluForward,
  nullMixBackward,
  nullMixForward,
  pixelUnshuffleBackward,
  pixelUnshuffleForward,
  scaleShiftBackward,
  scaleShiftForward,
  siluBackward,
  siluForward,
  splitChannels,
  timeEmbedding,
  upsampleBackward,
  upsampleForward,
} from "../kernels/elementwise.ts";
import { diffusionTarget, lossForward, qSample } from "../kernels/loss.ts";
import {
  ADAM_HYPER_LENGTH,
  adamUpdate,
  EMA_HYPER_LENGTH,
  emaUpdate,
  globalNormSquared,
} from "../kernels/optimizer.ts";
import { attentionBackward, attentionForward } from "./attention.ts";
import { convWeightBiasGrad, linearWeightBiasGrad, weightBiasLength } from "./fused.ts";
import { ALIGN_FLOATS, alignFloats, type ParamLayout, paramLayout } from "./layout.ts";
import { type MemoryPlan, planMemory } from "./memory.ts";
import type { Env, Lowered, Ref, StateBuffer } from "./types.ts";

export type { Env, Ref, StateBuffer } from "./types.ts";

/** One dispatch of the plan. */
export interface PlannedDispatch {
  /** The kernel. */
  spec: KernelSpec;
  /** What each binding of `spec.bindings` is bound to (same order), each `length` floats. */
  refs: Ref[];
  /** The part of the step it belongs to. */
  phase: "forward" | "loss" | "backward" | "update";
}

/** One intermediate value of a plan. */
export interface PlanValue {
  /** Floats. */
  floats: number;
  /** What it is, for messages (`conv downs.0.0.block1.proj`, `grad of #12`, `tmp`). */
  label: string;
}

/** A range of the input buffer. */
export interface InputRange {
  /** First float (aligned to 64). */
  offset: number;
  /** Floats. */
  length: number;
}

/**
 * The input buffer the host writes once per step (one `writeBuffer`), each field at an
 * aligned offset. Training: x0, noise, coef ([B·2]: √ᾱ_t, √(1 - ᾱ_t) per example), t (float
 * steps), labels and drop (conditional), the dropout masks in trace order, slot (u32: the loss
 * ring entry), adam and ema (the per-step scalars of ../kernels/optimizer.ts). Sampling: x, t,
 * labels and drop.
 */
export interface InputLayout {
  /** Floats of the whole buffer. */
  floats: number;
  /** Named ranges. */
  fields: Partial<
    Record<
      "x" | "x0" | "noise" | "coef" | "t" | "labels" | "drop" | "slot" | "adam" | "ema",
      InputRange
    >
  >;
  /** The dropout masks, by the dropout node's `index` (trace order), with its rate. */
  masks: (InputRange & { rate: number })[];
}

/** What a training plan computes besides the network. */
export interface TrainingObjective {
  /** The loss section. */
  loss: LossConfig;
  /** What the network predicts (default eps). */
  prediction?: "eps" | "x0" | "v";
  /** Clip the gradients to a global norm (the norm itself comes per step in `adam` hyper). */
  clip: boolean;
  /** Update an EMA of the weights after Adam. */
  ema: boolean;
  /** Entries of the loss ring buffer. */
  ring: number;
}

/** A compiled step. */
export interface Plan {
  /** Examples per step. */
  batch: number;
  /** A training plan (else: sampling). */
  training: boolean;
  /** Every dispatch, in order. */
  dispatches: PlannedDispatch[];
  /** The intermediate values. */
  values: PlanValue[];
  /** Which buffer holds each value. */
  memory: MemoryPlan;
  /** The flat parameter layout. */
  params: ParamLayout;
  /** The input buffer. */
  input: InputLayout;
  /** The network output (training: the prediction the loss reads). */
  output: Ref;
  /** Floats of the network output. */
  outputFloats: number;
  /** Loss ring entries (training). */
  ring: number;
}

/** Options of {@link lowerGraph}. */
export interface LowerOptions {
  /** Training: the objective (the graph must be traced with `training: true`). */
  objective?: TrainingObjective;
}

/** Ops that compute the same value for the same input and read no parameters. */
const PURE = new Set(["silu", "gelu"]);

class InputBuilder {
  floats = 0;
  fields: InputLayout["fields"] = {};
  masks: InputLayout["masks"] = [];

  add(length: number): InputRange {
    const range = { offset: this.floats, length };
    this.floats += alignFloats(Math.max(length, 1));
    return range;
  }
}

/** A gradient output of a backward kernel (see `Lowering.grads`). */
interface GradOut {
  /** Binding name. */
  name: string;
  /** The node whose gradient this is, or undefined for a parameter. */
  node?: number;
  /** A parameter's gradient range. */
  param?: Ref;
  /** Whether the kernel's `accumulate` flag applies to this output (else it always overwrites). */
  follows: boolean;
}

/** The lowering state: values, dispatches and the per-node refs. */
class Lowering {
  readonly values: PlanValue[] = [];
  readonly dispatches: PlannedDispatch[] = [];
  phase: PlannedDispatch["phase"] = "forward";

  value(floats: number, label: string): Ref {
    this.values.push({ floats, label });
    return { value: this.values.length - 1 };
  }

  length(ref: Ref): number {
    return "value" in ref ? this.values[ref.value].floats : ref.length;
  }

  /**
   * Emits `specs` in order. Each binding is bound by name from `env`; a `tmp*` binding absent
   * from it gets one scratch value shared by the specs (as long as their longest use); any
   * other absent read_write binding is an output: a new value, added to the returned env so
   * that later specs of the list (and the caller) read it. A read binding must be in `env`.
   */
  emit(
    specs: KernelSpec | KernelSpec[],
    env: Env,
    label: string,
  ): Env {
    const list = Array.isArray(specs) ? specs : [specs];
    const out: Env = { ...env };
    const scratch = new Map<string, number>();
    for (const spec of list) {
      for (const b of spec.bindings) {
        if (b.name.startsWith("tmp") && !(b.name in env)) {
          scratch.set(b.name, Math.max(scratch.get(b.name) ?? 0, b.length));
        }
      }
    }
    for (const [name, floats] of scratch) out[name] = this.value(floats, `${label} ${name}`);
    for (const spec of list) {
      const refs = spec.bindings.map((b): Ref => {
        let ref = out[b.name];
        if (ref === undefined) {
          if (b.access !== "read_write") {
            throw new Error(`plan: ${spec.name} (${label}) reads ${b.name}, which nothing wrote`);
          }
          ref = this.value(b.length, `${label} ${b.name}`);
          out[b.name] = ref;
        }
        const have = this.length(ref);
        if (b.length > have) {
          throw new Error(
            `plan: ${spec.name} (${label}) binds ${b.length} floats of ${b.name}, which has ${have}`,
          );
        }
        return "value" in ref ? ref : { ...ref, length: b.length };
      });
      checkAliasing(spec, refs, label);
      this.dispatches.push({ spec, refs, phase: this.phase });
    }
    return out;
  }
}

/** Throws when one dispatch binds one buffer writable and also through another binding read-only. */
function checkAliasing(spec: KernelSpec, refs: Ref[], label: string): void {
  const key = (r: Ref) => "value" in r ? `v${r.value}` : r.state;
  const access = new Map<string, Set<string>>();
  refs.forEach((r, i) => {
    const k = key(r);
    const set = access.get(k) ?? new Set();
    set.add(spec.bindings[i].access);
    access.set(k, set);
  });
  for (const [k, set] of access) {
    if (set.size > 1) {
      throw new Error(`plan: ${spec.name} (${label}) binds ${k} both read-only and writable`);
    }
  }
}

/** A fused group norm: the norm node, its optional scale-shift and SiLU, and the last node. */
interface NormGroup {
  norm: GraphNode;
  scaleShift?: GraphNode;
  silu?: GraphNode;
  last: number;
}

/** The graph after merging identical pure nodes: a representative id for every node. */
function canonicalIds(graph: LayerGraph): number[] {
  const canon = graph.nodes.map((n) => n.id);
  const seen = new Map<string, number>();
  for (const node of graph.nodes) {
    if (!PURE.has(node.op)) continue;
    const key = `${node.op}:${node.inputs.map((i) => canon[i]).join(",")}`;
    const first = seen.get(key);
    if (first === undefined) seen.set(key, node.id);
    else canon[node.id] = first;
  }
  return canon;
}

/**
 * Lowers `graph` into a plan: the sampling plan without `options.objective`, else the training
 * plan (the graph traced with `training: true`).
 */
export function lowerGraph(graph: LayerGraph, options: LowerOptions = {}): Plan {
  const objective = options.objective;
  const training = objective !== undefined;
  if (training && !graph.training) throw new Error("plan: a training plan needs a training trace");
  const params = paramLayout(graph.params);
  const canon = canonicalIds(graph);
  // The nodes that stay, with their inputs through the representatives.
  const nodes: GraphNode[] = graph.nodes.map((n) => ({
    ...n,
    inputs: n.inputs.map((i) => canon[i]),
  }));
  const alive = nodes.filter((n) => canon[n.id] === n.id);
  const uses = consumers({ ...graph, nodes });
  // Merged duplicates read nothing: drop them from the consumer lists.
  for (let i = 0; i < uses.length; i++) uses[i] = uses[i].filter((c) => canon[c] === c);
  const output = canon[graph.output];
  const batch = nodes[graph.inputs.x].shape[0];

  // Fusion of group norms with their scale-shift and SiLU.
  const groups = new Map<number, NormGroup>();
  const fusedInto = new Map<number, NormGroup>();
  for (const node of alive) {
    if (node.op !== "groupNorm") continue;
    const group: NormGroup = { norm: node, last: node.id };
    const single = (id: number) => uses[id].length === 1 && id !== output;
    let next = single(node.id) ? nodes[uses[node.id][0]] : undefined;
    // The fused kernel runs where the norm is: its scale-shift must be computed by then.
    if (next?.op === "scaleShift" && next.inputs[0] === node.id && next.inputs[1] < node.id) {
      group.scaleShift = next;
      group.last = next.id;
      next = single(next.id) ? nodes[uses[next.id][0]] : undefined;
    }
    if (next?.op === "silu") {
      group.silu = next;
      group.last = next.id;
    }
    groups.set(node.id, group);
    for (const n of [group.scaleShift, group.silu]) if (n) fusedInto.set(n.id, group);
  }

  // Which nodes' gradients are needed: those that depend on a parameter.
  const needsGrad = nodes.map(() => false);
  for (const node of alive) {
    needsGrad[node.id] = node.op !== "input" &&
      (nodeParams(node).length > 0 || node.inputs.some((i) => needsGrad[i]));
  }

  const L = new Lowering();
  const input = new InputBuilder();
  const inRef = (r: InputRange): Ref => ({ state: "input", offset: r.offset, length: r.length });
  const paramRef = (name: string, state: StateBuffer = "params"): Ref => {
    const slot = params.byName.get(name);
    if (!slot) throw new Error(`plan: no parameter ${name}`);
    return { state, offset: slot.offset, length: slot.size };
  };
  const val: Ref[] = [];
  // What each node's backward reads beyond its inputs' values (saved statistics, q/k/v, ...).
  const saved: Env[] = [];

  // Inputs.
  const xShape = nodes[graph.inputs.x].shape;
  const imageFloats = shapeSize(xShape);
  const f = input.fields;
  if (training) {
    f.x0 = input.add(imageFloats);
    f.noise = input.add(imageFloats);
    f.coef = input.add(2 * batch);
  } else f.x = input.add(imageFloats);
  f.t = input.add(batch);
  if (graph.inputs.labels !== undefined) {
    f.labels = input.add(shapeSize(nodes[graph.inputs.labels].shape));
    f.drop = input.add(batch);
  }
  for (const node of alive) {
    if (node.op === "dropout") {
      input.masks[node.index] = { ...input.add(shapeSize(node.shape)), rate: node.rate };
    }
  }
  if (training) {
    f.slot = input.add(1);
    f.adam = input.add(ADAM_HYPER_LENGTH);
    f.ema = input.add(EMA_HYPER_LENGTH);
  }

  // Forward.
  const size = xShape.slice(1).reduce((a, b) => a * b, 1);
  if (training) {
    L.phase = "loss";
    val[graph.inputs.x] = L.emit(
      qSample({ batch, size }),
      { x0: inRef(f.x0!), noise: inRef(f.noise!), coef: inRef(f.coef!) },
      "qSample",
    ).xt;
    L.phase = "forward";
  } else val[graph.inputs.x] = inRef(f.x!);
  val[graph.inputs.t] = inRef(f.t!);
  if (graph.inputs.labels !== undefined) {
    val[graph.inputs.labels] = inRef(f.labels!);
    val[graph.inputs.drop!] = inRef(f.drop!);
  }
  for (const node of alive) {
    if (node.op === "input" || fusedInto.has(node.id)) continue;
    const group = groups.get(node.id);
    const result = group
      ? forwardNorm(L, group, { val, paramRef, nodes })
      : forwardNode(L, node, { val, paramRef, nodes, masks: input.masks.map(inRef) });
    val[group ? group.last : node.id] = result.y;
    saved[group ? group.last : node.id] = result.saved;
  }

  const outputRef = val[output];
  const outputFloats = shapeSize(nodes[output].shape);
  if (training) {
    const { loss, prediction = "eps" } = objective;
    L.phase = "loss";
    const target = prediction === "eps"
      ? inRef(f.noise!)
      : prediction === "x0"
      ? inRef(f.x0!)
      : L.emit(
        diffusionTarget({ batch, size, target: "v" }),
        { x0: inRef(f.x0!), noise: inRef(f.noise!), coef: inRef(f.coef!) },
        "target",
      ).target;
    const grad: (Ref | undefined)[] = nodes.map(() => undefined);
    grad[output] = L.emit(
      lossForward(
        {
          n: outputFloats,
          kind: loss.kind,
          ...(loss.kind === "huber" ? { delta: loss.delta } : {}),
        },
        { ring: objective.ring },
      ),
      {
        pred: outputRef,
        target,
        slot: inRef(f.slot!),
        loss: { state: "ring", offset: 0, length: objective.ring },
      },
      "loss",
    ).dpred;

    // Backward.
    L.phase = "backward";
    const router = new GradRouter(L, grad, needsGrad);
    for (let k = alive.length - 1; k >= 0; k--) {
      const node = alive[k];
      if (node.op === "input") continue;
      const group = fusedInto.get(node.id) ?? groups.get(node.id);
      if (group && group.last !== node.id) continue;
      if (grad[node.id] === undefined) continue; // not on the loss's path
      const ctx = {
        val,
        paramRef,
        nodes,
        uses,
        saved: saved[node.id],
        router,
        masks: input.masks.map(inRef),
      };
      if (group) backwardNorm(group, ctx);
      else backwardNode(L, node, ctx);
    }

    // Update.
    L.phase = "update";
    const all = (state: StateBuffer): Ref => ({ state, offset: 0, length: params.floats });
    const norm = objective.clip
      ? L.emit(globalNormSquared(params.floats), { g: all("grads") }, "norm").norm
      : undefined;
    L.emit(
      adamUpdate(params.floats, { clip: objective.clip }),
      {
        p: all("params"),
        g: all("grads"),
        m: all("m"),
        v: all("v"),
        hyper: inRef(f.adam!),
        ...(norm ? { norm } : {}),
      },
      "adam",
    );
    if (objective.ema) {
      L.emit(
        emaUpdate(params.floats),
        { ema: all("ema"), p: all("params"), hyper: inRef(f.ema!) },
        "ema",
      );
    }
  }

  // Liveness: each value from its first to its last dispatch; the output to the end.
  const lives = L.values.map((v) => ({ floats: v.floats, first: -1, last: -1 }));
  L.dispatches.forEach((d, i) => {
    for (const r of d.refs) {
      if (!("value" in r)) continue;
      const life = lives[r.value];
      if (life.first < 0) life.first = i;
      life.last = i;
    }
  });
  if ("value" in outputRef) lives[outputRef.value].last = L.dispatches.length;
  return {
    batch,
    training,
    dispatches: L.dispatches,
    values: L.values,
    memory: planMemory(lives),
    params,
    input: {
      floats: Math.max(input.floats, ALIGN_FLOATS),
      fields: input.fields,
      masks: input.masks,
    },
    output: outputRef,
    outputFloats,
    ring: objective?.ring ?? 0,
  };
}

/** What a node's forward lowering reads. */
interface ForwardContext {
  val: Ref[];
  paramRef: (name: string, state?: StateBuffer) => Ref;
  nodes: GraphNode[];
  masks?: Ref[];
}

function image(
  shape: number[],
): { batch: number; height: number; width: number; channels: number } {
  const [batch, height, width, channels] = shape;
  return { batch, height, width, channels };
}

function convShape(node: GraphNode & { op: "conv" }, inShape: number[]) {
  const [batch, height, width, cin] = inShape;
  return { batch, height, width, cin, cout: node.shape[3], k: node.k as 1 | 3 };
}

function forwardNorm(L: Lowering, group: NormGroup, ctx: ForwardContext): Lowered {
  const { norm } = group;
  const x = ctx.val[norm.inputs[0]];
  const [batch, height, width, channels] = norm.shape;
  if (norm.op !== "groupNorm") throw new Error("plan: not a group norm");
  const shape = { batch, pixels: height * width, channels, groups: norm.groups };
  const opts = { silu: group.silu !== undefined, scaleShift: group.scaleShift !== undefined };
  const env: Env = {
    x,
    gamma: ctx.paramRef(`${norm.param}.weight`),
    beta: ctx.paramRef(`${norm.param}.bias`),
  };
  if (group.scaleShift) env.ss = ctx.val[group.scaleShift.inputs[1]];
  const out = L.emit(groupNormForward(shape, opts), env, `groupNorm ${norm.param}`);
  return { y: out.y, saved: { stats: out.stats } };
}

function forwardNode(L: Lowering, node: GraphNode, ctx: ForwardContext): Lowered {
  const a = node.inputs.map((i) => ctx.val[i]);
  const inShape = node.inputs.length > 0 ? ctx.nodes[node.inputs[0]].shape : [];
  const n = shapeSize(node.shape);
  const label = `${node.op} #${node.id}${"param" in node ? ` ${node.param}` : ""}`;
  const y = (specs: KernelSpec | KernelSpec[], env: Env): Lowered => ({
    y: L.emit(specs, env, label).y,
    saved: {},
  });
  switch (node.op) {
    case "conv": {
      const env: Env = { x: a[0], w: ctx.paramRef(`${node.param}.weight`) };
      if (node.bias) env.b = ctx.paramRef(`${node.param}.bias`);
      return y(convForward(convShape(node, inShape), { bias: node.bias }), env);
    }
    case "linear":
      return y(
        linearForward({ rows: inShape[0], cin: inShape[1], cout: node.shape[1] }, { bias: true }),
        { x: a[0], w: ctx.paramRef(`${node.param}.weight`), b: ctx.paramRef(`${node.param}.bias`) },
      );
    case "groupNorm":
      throw new Error("plan: group norms are lowered by forwardNorm");
    case "silu":
      return y(siluForward(n), { x: a[0] });
    case "gelu":
      return y(geluForward(n), { x: a[0] });
    case "add":
      return y(add(n), { a: a[0], b: a[1] });
    case "scaleShift": {
      const { batch, height, width, channels } = image(node.shape);
      return y(scaleShiftForward({ batch, pixels: height * width, channels }), {
        h: a[0],
        ss: a[1],
      });
    }
    case "concat": {
      const [batch, height, width, ca] = inShape;
      const cb = ctx.nodes[node.inputs[1]].shape[3];
      return y(concatChannels({ batch, pixels: height * width, ca, cb }), { a: a[0], b: a[1] });
    }
    case "timeEmbedding":
      return y(timeEmbedding({ batch: node.shape[0], dim: node.dim }), { t: a[0] });
    case "pixelUnshuffle":
      return y(pixelUnshuffleForward(image(inShape)), { x: a[0] });
    case "upsample":
      return y(upsampleForward(image(inShape)), { x: a[0] });
    case "dropout":
      return y(dropoutForward(n), { x: a[0], mask: ctx.masks![node.index] });
    case "nullMix":
      return y(nullMixForward({ batch: node.shape[0], width: node.shape[1] }), {
        h: a[0],
        nul: ctx.paramRef(node.param),
        drop: a[1],
      });
    case "linearAttention":
    case "attention":
    case "crossAttention": {
      return attentionForward(node, {
        nodes: ctx.nodes,
        inputs: a,
        emit: (specs, env, what) => L.emit(specs, env, `${label} ${what}`),
        param: (name) => ctx.paramRef(name),
      });
    }
    case "nullTokens":
      throw new Error(
        "plan: nullTokens (a conditional network traced without labels) is not lowered; " +
          "trace with labels and drop = 1",
      );
    case "input":
      throw new Error("plan: inputs are not lowered");
  }
}

/**
 * Routes gradients into the node gradient buffers: the first contribution to a node
 * overwrites (a new value), later ones accumulate.
 */
class GradRouter {
  constructor(
    readonly L: Lowering,
    readonly grad: (Ref | undefined)[],
    readonly needsGrad: boolean[],
  ) {}

  /**
   * Emits a backward kernel built by `build(accumulate)` whose gradient outputs are `outs`
   * (node gradients, parameter gradients); `env` holds everything else it reads.
   */
  grads(
    build: (accumulate: boolean) => KernelSpec | KernelSpec[],
    env: Env,
    outs: GradOut[],
    label: string,
  ): void {
    const started = (o: GradOut) =>
      o.node !== undefined && this.needsGrad[o.node] && this.grad[o.node] !== undefined;
    const followers = outs.filter((o) => o.follows && (o.param || this.needsGrad[o.node!]));
    const flag = followers.length > 0 && followers.every(started);
    const bound: Env = { ...env };
    const copies: { name: string; node: number }[] = [];
    for (const o of outs) {
      if (o.param) {
        if (o.follows && flag) {
          throw new Error(`plan: ${label} would accumulate a parameter gradient`);
        }
        bound[o.name] = o.param;
        continue;
      }
      const node = o.node!;
      if (!this.needsGrad[node]) continue; // a dead scratch output
      const provided = o.follows ? flag : false;
      if (started(o)) {
        if (provided) bound[o.name] = this.grad[node]!;
        else copies.push({ name: o.name, node }); // written to scratch, then accumulated
      }
    }
    const out = this.L.emit(build(flag), bound, label);
    for (const o of outs) {
      if (o.node !== undefined && this.needsGrad[o.node] && this.grad[o.node] === undefined) {
        this.grad[o.node] = out[o.name];
      }
    }
    for (const c of copies) this.accumulate(c.node, out[c.name], label);
  }

  /** Adds `src` into the gradient of `node` (which must have one). */
  accumulate(node: number, src: Ref, label: string): void {
    const dst = this.grad[node]!;
    this.L.emit(copy(this.L.length(dst), { accumulate: true }), { src, dst }, `${label} +=`);
  }

  /** One gradient output `name` into `node`, through a kernel with `accumulate`. */
  into(
    node: number,
    build: (accumulate: boolean) => KernelSpec | KernelSpec[],
    env: Env,
    name: string,
    label: string,
  ): void {
    if (!this.needsGrad[node]) return;
    this.grads(build, env, [{ name, node, follows: true }], label);
  }
}

interface BackwardContext extends ForwardContext {
  saved: Env;
  uses: number[][];
  router: GradRouter;
}

function backwardNorm(group: NormGroup, ctx: BackwardContext): void {
  const { norm } = group;
  if (norm.op !== "groupNorm") throw new Error("plan: not a group norm");
  const [batch, height, width, channels] = norm.shape;
  const shape = { batch, pixels: height * width, channels, groups: norm.groups };
  const opts = { silu: group.silu !== undefined, scaleShift: group.scaleShift !== undefined };
  const env: Env = {
    dy: ctx.router.grad[group.last]!,
    x: ctx.val[norm.inputs[0]],
    gamma: ctx.paramRef(`${norm.param}.weight`),
    beta: ctx.paramRef(`${norm.param}.bias`),
    stats: ctx.saved.stats,
  };
  const outs: GradOut[] = [
    { name: "dx", node: norm.inputs[0], follows: true },
    { name: "dgamma", param: ctx.paramRef(`${norm.param}.weight`, "grads"), follows: false },
    { name: "dbeta", param: ctx.paramRef(`${norm.param}.bias`, "grads"), follows: false },
  ];
  if (group.scaleShift) {
    env.ss = ctx.val[group.scaleShift.inputs[1]];
    outs.push({ name: "dss", node: group.scaleShift.inputs[1], follows: false });
  }
  ctx.router.grads(
    (accumulate) => groupNormBackward(shape, { ...opts, accumulate }),
    env,
    outs,
    `groupNorm' ${norm.param}`,
  );
}

function backwardNode(L: Lowering, node: GraphNode, ctx: BackwardContext): void {
  const { router } = ctx;
  const dy = router.grad[node.id]!;
  const a = node.inputs.map((i) => ctx.val[i]);
  const [i0, i1] = node.inputs;
  const inShape = node.inputs.length > 0 ? ctx.nodes[i0].shape : [];
  const n = shapeSize(node.shape);
  const label = `${node.op}' #${node.id}${"param" in node ? ` ${node.param}` : ""}`;
  const pgrad = (name: string) => ctx.paramRef(name, "grads");
  // The gradient range of `<prefix>.weight` and `<prefix>.bias` together (./fused.ts).
  const weightBias = (prefix: string): Ref => {
    const w = pgrad(`${prefix}.weight`) as Ref & { offset: number; length: number };
    const b = pgrad(`${prefix}.bias`) as Ref & { offset: number; length: number };
    const length = weightBiasLength(w.length, b.length);
    if (b.offset !== w.offset + length - b.length) {
      throw new Error(`plan: ${prefix}.bias does not follow its weight in the flat layout`);
    }
    return { state: "grads", offset: w.offset, length };
  };
  switch (node.op) {
    case "conv": {
      const s = convShape(node, inShape);
      const w = ctx.paramRef(`${node.param}.weight`);
      if (node.bias) {
        L.emit(convWeightBiasGrad(s), { x: a[0], dy, dwb: weightBias(node.param) }, label);
      } else L.emit(convWeightGrad(s), { x: a[0], dy, dw: pgrad(`${node.param}.weight`) }, label);
      router.into(i0, (accumulate) => convInputGrad(s, { accumulate }), { dy, w }, "dx", label);
      return;
    }
    case "linear": {
      const s = { rows: inShape[0], cin: inShape[1], cout: node.shape[1] };
      const w = ctx.paramRef(`${node.param}.weight`);
      L.emit(linearWeightBiasGrad(s), { x: a[0], dy, dwb: weightBias(node.param) }, label);
      router.into(i0, (accumulate) => linearInputGrad(s, { accumulate }), { dy, w }, "dx", label);
      return;
    }
    case "silu":
      router.into(
        i0,
        (accumulate) => siluBackward(n, { accumulate }),
        { dy, x: a[0] },
        "dx",
        label,
      );
      return;
    case "gelu":
      router.into(
        i0,
        (accumulate) => geluBackward(n, { accumulate }),
        { dy, x: a[0] },
        "dx",
        label,
      );
      return;
    case "add": {
      const targets = [...new Set(node.inputs)].filter((i) => router.needsGrad[i]);
      if (i0 === i1) {
        router.into(
          i0,
          (accumulate) => copy(n, { accumulate, scale: 2 }),
          { src: dy },
          "dst",
          label,
        );
        return;
      }
      // dy itself becomes the gradient of inputs that have none yet, without a copy, when
      // that is safe: at most one of them (the writer) receives later contributions, and each
      // other one (a reader: the add is its only consumer) is read by its producer's backward
      // before the writer's other consumers add into the shared buffer. Else copies.
      const fresh = targets.filter((i) => router.grad[i] === undefined);
      const readers = fresh.filter((i) => ctx.uses[i].length === 1);
      const writers = fresh.filter((i) => ctx.uses[i].length > 1);
      const takers: number[] = [];
      if (writers.length <= 1) {
        const later = writers.length === 0
          ? -1
          : Math.max(...ctx.uses[writers[0]].filter((c) => c !== node.id));
        takers.push(...readers.filter((r) => r > later), ...writers);
      } else takers.push(writers[0]);
      if (takers.length === 0 && fresh.length > 0) takers.push(fresh[0]);
      for (const t of targets) {
        if (takers.includes(t)) continue;
        router.into(t, (accumulate) => copy(n, { accumulate }), { src: dy }, "dst", label);
      }
      for (const t of takers) router.grad[t] = dy;
      return;
    }
    case "scaleShift": {
      const { batch, height, width, channels } = image(node.shape);
      router.grads(
        (accumulate) =>
          scaleShiftBackward({ batch, pixels: height * width, channels }, { accumulate }),
        { dy, h: a[0], ss: a[1] },
        [{ name: "dh", node: i0, follows: true }, { name: "dss", node: i1, follows: true }],
        label,
      );
      return;
    }
    case "concat": {
      const [batch, height, width, ca] = inShape;
      const cb = ctx.nodes[i1].shape[3];
      router.grads(
        (accumulate) => splitChannels({ batch, pixels: height * width, ca, cb }, { accumulate }),
        { dy },
        [{ name: "da", node: i0, follows: true }, { name: "db", node: i1, follows: true }],
        label,
      );
      return;
    }
    case "pixelUnshuffle":
      router.into(
        i0,
        (accumulate) => pixelUnshuffleBackward(image(inShape), { accumulate }),
        { dy },
        "dx",
        label,
      );
      return;
    case "upsample":
      router.into(
        i0,
        (accumulate) => upsampleBackward(image(inShape), { accumulate }),
        { dy },
        "dx",
        label,
      );
      return;
    case "dropout":
      router.into(
        i0,
        (accumulate) => dropoutBackward(n, { accumulate }),
        { dy, mask: ctx.masks![node.index] },
        "dx",
        label,
      );
      return;
    case "nullMix":
      router.grads(
        (accumulate) =>
          nullMixBackward({ batch: node.shape[0], width: node.shape[1] }, { accumulate }),
        { dy, drop: a[1] },
        [
          { name: "dh", node: i0, follows: true },
          { name: "dnul", param: pgrad(node.param), follows: true },
        ],
        label,
      );
      return;
    case "linearAttention":
    case "attention":
    case "crossAttention":
      attentionBackward(node, {
        nodes: ctx.nodes,
        dy,
        inputs: a,
        saved: ctx.saved,
        emit: (specs, env, what) => L.emit(specs, env, `${label} ${what}`),
        param: (name) => ctx.paramRef(name),
        paramGrad: pgrad,
        into: (target, build, env, name) =>
          router.into(node.inputs[target], build, env, name, label),
      });
      return;
    case "timeEmbedding":
      return; // t has no gradient
    case "groupNorm":
    case "nullTokens":
    case "input":
      throw new Error(`plan: no backward for ${node.op} here`);
  }
}
