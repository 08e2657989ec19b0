/**
 * The types the lowering shares between ./plan.ts and the per-family lowerings
 * (./attention.ts): what a binding is bound to, and how a lowering emits kernels.
 * @module
 */
import type { KernelSpec } from "../kernel.ts";

/** The buffers that live as long as the engine (the rest are plan values). */
export type StateBuffer = "params" | "grads" | "m" | "v" | "ema" | "input" | "ring";

/** What a binding reads or writes: a plan value, or a range of a state buffer (in floats). */
export type Ref =
  | { value: number }
  | { state: StateBuffer; offset: number; length: number };

/** Bindings by name. */
export type Env = Record<string, Ref>;

/**
 * Emits kernels bound by name from `env` (absent read_write bindings become new values,
 * absent `tmp*` bindings shared scratch) and returns `env` with the new values.
 */
export type Emit = (specs: KernelSpec | KernelSpec[], env: Env, what: string) => Env;

/** What a forward lowering gives: the output, and what its backward reads besides the inputs. */
export interface Lowered {
  /** The node's output. */
  y: Ref;
  /** Saved values by name. */
  saved: Env;
}
