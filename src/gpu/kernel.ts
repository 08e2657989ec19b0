/**
 * What a compute kernel is to the engine: WGSL source with every shape baked in as a constant
 * (the plan is static, so no uniform buffers), the storage bindings it reads and writes in
 * `@group(0) @binding(i)` order, and how many workgroups one dispatch launches. A kernel family
 * (./kernels/<family>.ts) exports builders `(shape, options) => KernelSpec` and, beside each, a
 * plain TypeScript reference of the same function; tests hold one against the other.
 * @module
 */

/** One storage binding of a kernel, `@group(0) @binding(index in KernelSpec.bindings)`. */
export interface Binding {
  /** Name the engine binds a buffer range to (`x`, `w`, `dy`, ...). */
  name: string;
  /** `read`: `var<storage, read>`; `read_write`: `var<storage, read_write>`. */
  access: "read" | "read_write";
  /** Number of f32 (or u32) elements the kernel reads or writes through this binding. */
  length: number;
}

/** A compute kernel with its shapes baked in. */
export interface KernelSpec {
  /** Family and variant, for dispatch counts and error messages (`conv3x3.forward`). */
  name: string;
  /** WGSL source with one `@compute` entry point named `main`. */
  code: string;
  /** The storage bindings, in binding order. */
  bindings: Binding[];
  /** Workgroups of one dispatch (x, y, z), each at most the device's per-dimension limit. */
  workgroups: [number, number, number];
}

/** Most workgroups per dimension that WebGPU guarantees (`maxComputeWorkgroupsPerDimension`). */
export const MAX_WORKGROUPS = 65535;

/** Integer ceiling of a / b. */
export function ceilDiv(a: number, b: number): number {
  return Math.floor((a + b - 1) / b);
}

/**
 * Workgroups that cover `threads` invocations of `size`-wide workgroups, folded into (x, y) when
 * x would pass {@link MAX_WORKGROUPS}; the kernel recovers its linear index as
 * `gid.x + gid.y * (workgroups.x * size)` and returns past `threads`.
 */
export function linearWorkgroups(threads: number, size: number): [number, number, number] {
  const groups = ceilDiv(threads, size);
  if (groups <= MAX_WORKGROUPS) return [Math.max(groups, 1), 1, 1];
  const y = ceilDiv(groups, MAX_WORKGROUPS);
  return [ceilDiv(groups, y), y, 1];
}

/** A WGSL f32 literal of `v` that round-trips (`1.0`, `-0.5`, `3.0517578e-05`). */
export function f32(v: number): string {
  if (!Number.isFinite(v)) throw new RangeError(`f32: ${v} has no WGSL literal`);
  const s = String(Math.fround(v));
  return /[.e]/.test(s) ? s : `${s}.0`;
}

/** The WGSL declarations of `bindings` (`@group(0) @binding(i) var<storage, ...> name: array<f32>;`). */
export function declareBindings(bindings: readonly Binding[], type = "f32"): string {
  return bindings.map((b, i) =>
    `@group(0) @binding(${i}) var<storage, ${b.access}> ${b.name}: array<${type}>;`
  ).join("\n");
}
