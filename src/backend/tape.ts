/**
 * Gradients with a smaller memory peak than `tf.variableGrads`.
 *
 * tfjs 4.22's backward pass (`engine.gradients` + `backpropagateGradients`) keeps every
 * intermediate gradient and every tensor saved for the backward pass alive until the whole
 * backward pass ends, so the peak holds all forward activations plus all their gradients
 * (2.2 GB for the course U-Net at 32x32, batch 32). This version walks the same tape in the
 * same order and calls the same gradient functions, so it computes the same bits, but releases
 * each node's output gradients and saved tensors as soon as the node has been processed, and
 * the partial gradients that have been summed.
 *
 * It uses the engine's tape (`startTape`, `state.activeTape`), which tfjs does not document;
 * {@link variableGradsLowMemory} falls back to `tf.variableGrads` when the installed tfjs is not
 * the tested one (./tfjs_internals.ts) or the tape is not there.
 * @module
 */
import { tf } from "../tf.ts";
import { tfjsInternalsUsable } from "./tfjs_internals.ts";

interface TapeNode {
  id: number;
  kernelName: string;
  inputs: Record<string, tf.Tensor>;
  outputs: tf.Tensor[];
  saved?: tf.Tensor[];
  gradient?: (dys: (tf.Tensor | null)[]) => Record<string, () => tf.Tensor>;
}

interface EngineInternals {
  state: { activeTape: TapeNode[] | null; gradientDepth: number };
  startTape(): void;
  endTape(): void;
  tidy<T extends tf.TensorContainer>(name: string, fn: () => T): T;
  scopedRun<T>(start: () => void, end: () => void, f: () => T): T;
}

function engineInternals(): EngineInternals | undefined {
  const engine = tf.engine() as unknown as Partial<EngineInternals>;
  const ok = typeof engine.startTape === "function" && typeof engine.endTape === "function" &&
    typeof engine.scopedRun === "function" && typeof engine.tidy === "function" &&
    typeof engine.state === "object" && engine.state !== null && "gradientDepth" in engine.state;
  return ok ? engine as EngineInternals : undefined;
}

/** The nodes of `tape` on a path from one of `xs` to `y`, inputs pruned to those from `xs`. */
function filterTape(tape: TapeNode[], xs: tf.Tensor[], y: tf.Tensor): TapeNode[] {
  const fromX = new Set<number>(xs.map((x) => x.id));
  const nodesFromX = new Set<number>();
  for (const node of tape) {
    for (const name in node.inputs) {
      if (fromX.has(node.inputs[name].id)) {
        for (const o of node.outputs) fromX.add(o.id);
        nodesFromX.add(node.id);
        break;
      }
    }
  }
  const toY = new Set<number>([y.id]);
  const nodesToY = new Set<number>();
  for (let i = tape.length - 1; i >= 0; i--) {
    const node = tape[i];
    if (node.outputs.some((o) => toY.has(o.id))) {
      for (const name in node.inputs) {
        toY.add(node.inputs[name].id);
        nodesToY.add(node.id);
      }
    }
  }
  const filtered: TapeNode[] = [];
  for (const node of tape) {
    if (!nodesFromX.has(node.id) || !nodesToY.has(node.id)) continue;
    const inputs: Record<string, tf.Tensor> = {};
    for (const name in node.inputs) {
      if (fromX.has(node.inputs[name].id)) inputs[name] = node.inputs[name];
    }
    filtered.push({ ...node, inputs });
  }
  return filtered;
}

/** Gradients keyed by tensor id, with a count of how many keys hold each tensor object. */
class GradientMap {
  #byId = new Map<number, tf.Tensor>();
  #holders = new Map<tf.Tensor, number>();

  get(id: number): tf.Tensor | undefined {
    return this.#byId.get(id);
  }

  set(id: number, t: tf.Tensor): void {
    this.take(id);
    this.#byId.set(id, t);
    this.#holders.set(t, (this.#holders.get(t) ?? 0) + 1);
  }

  /** Removes the entry of `id`; returns its tensor when no other entry holds it. */
  take(id: number): tf.Tensor | undefined {
    const t = this.#byId.get(id);
    if (t === undefined) return undefined;
    this.#byId.delete(id);
    const n = (this.#holders.get(t) ?? 1) - 1;
    if (n > 0) {
      this.#holders.set(t, n);
      return undefined;
    }
    this.#holders.delete(t);
    return t;
  }

  holds(t: tf.Tensor): boolean {
    return this.#holders.has(t);
  }
}

function backpropagate(
  engine: EngineInternals,
  tape: TapeNode[],
  grads: GradientMap,
  keep: Set<number>,
): void {
  for (let i = tape.length - 1; i >= 0; i--) {
    const node = tape[i];
    const dys = node.outputs.map((o) => grads.get(o.id) ?? null);
    if (node.gradient === undefined) {
      throw new Error(
        `Cannot compute gradient: gradient function not found for ${node.kernelName}.`,
      );
    }
    const inputGradients = node.gradient(dys);
    for (const name in node.inputs) {
      if (!(name in inputGradients)) {
        throw new Error(
          `Cannot backprop through input ${name}. Available gradients found: ` +
            `${Object.keys(inputGradients)}.`,
        );
      }
      const dx = engine.tidy("gradient", () => inputGradients[name]());
      const x = node.inputs[name];
      if (dx.dtype !== "float32") {
        throw new Error(
          `Error in gradient for op ${node.kernelName}. The gradient of input ${name} must ` +
            `have 'float32' dtype, but has '${dx.dtype}'`,
        );
      }
      if (!tf.util.arraysEqual(dx.shape, x.shape)) {
        throw new Error(
          `Error in gradient for op ${node.kernelName}. The gradient of input '${name}' has ` +
            `shape '${dx.shape}', which does not match the shape of the input '${x.shape}'`,
        );
      }
      const current = grads.get(x.id);
      if (current === undefined) {
        grads.set(x.id, dx);
      } else {
        grads.set(x.id, tf.add(current, dx));
        if (!grads.holds(current) && !dys.includes(current)) current.dispose();
        if (!grads.holds(dx) && !dys.includes(dx)) dx.dispose();
      }
    }
    // The node is done: its output gradients and saved tensors are not needed any more.
    for (const o of node.outputs) {
      if (keep.has(o.id)) continue;
      const dy = grads.take(o.id);
      if (dy !== undefined && !grads.holds(dy)) dy.dispose();
    }
    for (const t of node.saved ?? []) t.dispose();
  }
}

/**
 * Like `tf.variableGrads(f, varList)` (same values, same bits), but releasing memory during
 * the backward pass. `f` must return a scalar; every variable in `varList` must be trainable.
 */
export function variableGradsLowMemory(
  f: () => tf.Scalar,
  varList: tf.Variable[],
): { value: tf.Scalar; grads: tf.NamedTensorMap } {
  const engine = tfjsInternalsUsable() ? engineInternals() : undefined;
  if (engine === undefined || engine.state.gradientDepth !== 0) {
    return tf.variableGrads(f, varList);
  }
  const xs = varList.filter((v) => v.trainable);
  if (xs.length === 0) throw new Error("variableGradsLowMemory: no trainable variable");
  const y = engine.scopedRun(
    () => engine.startTape(),
    () => engine.endTape(),
    () => engine.tidy("forward", f),
  );
  if (!(y instanceof tf.Tensor) || y.rank !== 0) {
    throw new Error("variableGradsLowMemory: f must return a scalar tensor");
  }
  const fullTape = engine.state.activeTape ?? [];
  const tape = filterTape(fullTape, xs, y);
  return engine.tidy("backward", () => {
    const grads = new GradientMap();
    grads.set(y.id, tf.onesLike(y));
    const keep = new Set(xs.map((x) => x.id));
    backpropagate(engine, tape, grads, keep);
    const named: tf.NamedTensorMap = {};
    for (const x of xs) {
      const g = grads.get(x.id);
      if (g !== undefined) named[x.name] = g;
    }
    for (const node of fullTape) for (const t of node.saved ?? []) t.dispose();
    engine.state.activeTape = null;
    if (Object.keys(named).length === 0) {
      throw new Error("variableGradsLowMemory: no variable is connected to the result of f");
    }
    return { value: y, grads: named };
  });
}
