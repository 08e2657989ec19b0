/**
 * The small kernels of the U-Net: activations (SiLU, exact GELU), the residual blocks'
 * scale-shift, channel concat / split, pixel-unshuffle, nearest 2x upsampling, the sinusoidal
 * time embedding, dropout by a host mask, the classifier-free-guidance null mix, and the plain
 * `add` / `copy` the engine routes activations and gradients with; each forward with its
 * backward, each with a TypeScript reference.
 *
 * The references take their inputs by binding name (`{ x }`, `{ dy, x }`, as `runKernel` does)
 * as any `ArrayLike<number>` and return their outputs by binding name as Float64Arrays computed
 * in float64: given Float32Arrays they are the kernel's function, given float64 arrays they are
 * smooth enough for central finite differences. A reference always returns the value a
 * gradient kernel writes with `accumulate: false`; with `accumulate: true` the kernel adds that
 * value to what its output binding holds.
 *
 * Elementwise kernels run one thread per output element, 256 threads per workgroup, over a grid
 * folded by {@link linearWorkgroups}; the reductions (the scale-shift and null-mix gradients)
 * run in a fixed order (a loop per thread, then a fixed workgroup tree), never with atomics, so
 * every kernel here gives the same bytes for the same inputs.
 * @module
 */
import { type Binding, f32, type KernelSpec, linearWorkgroups } from "../kernel.ts";

/** Arrays a reference reads, by binding name. */
export type Values = ArrayLike<number>;

/** Options of every kernel that writes a gradient. */
export interface GradOptions {
  /** true: add to what the gradient binding holds (`out[i] += v`); false (default): overwrite. */
  accumulate?: boolean;
}

/** Threads per workgroup of the elementwise kernels. */
export const WORKGROUP_SIZE = 256;

/** A `read` binding. */
export function input(name: string, length: number): Binding {
  return { name, access: "read", length };
}

/** A `read_write` binding (every output, since WGSL writes only through those). */
export function output(name: string, length: number): Binding {
  return { name, access: "read_write", length };
}

/**
 * The WGSL statement writing `value` to `lvalue` (`dx[i]`), or adding it with `accumulate`
 * (name reserved-word bindings by {@link wgslName} in `lvalue`).
 */
export function store(lvalue: string, value: string, options: GradOptions = {}): string {
  return options.accumulate ? `${lvalue} = ${lvalue} + (${value});` : `${lvalue} = ${value};`;
}

/** WGSL's reserved words (WGSL §15.2), which a binding name like `target` may collide with. */
const RESERVED = new Set(
  ("NULL Self abstract active alignas alignof as asm asm_fragment async attribute auto await " +
    "become binding_array cast catch class co_await co_return co_yield coherent column_major " +
    "common compile compile_fragment concept const_cast consteval constexpr constinit crate " +
    "debugger decltype delete demote demote_to_helper do dynamic_cast enum explicit export " +
    "extends extern external fallthrough filter final finally friend from fxgroup get goto " +
    "groupshared highp impl implements import inline instanceof interface layout lowp macro " +
    "macro_rules match mediump meta mod module move mut mutable namespace new nil noexcept " +
    "noinline nointerpolation noperspective null nullptr of operator package packoffset " +
    "partition pass patch pixelfragment precise precision premerge priv protected pub public " +
    "readonly ref regardless register reinterpret_cast require resource restrict self set " +
    "shared sizeof smooth snorm static static_assert static_cast std subroutine super target " +
    "template this thread_local throw trait try type typedef typeid typename typeof union " +
    "unless unorm unsafe unsized use using varying virtual volatile wgsl where with writeonly " +
    "yield").split(" "),
);

/**
 * The WGSL variable of the binding `name`: the name itself, or `name_` for a WGSL reserved
 * word (`target` -> `target_`), so that bindings keep their meaningful names.
 */
export function wgslName(name: string): string {
  return RESERVED.has(name) ? `${name}_` : name;
}

/** The `@group(0) @binding(i)` declarations of `bindings` ({@link wgslName}s; `u32` by name). */
export function declare(bindings: readonly Binding[], u32: readonly string[] = []): string {
  return bindings.map((b, i) =>
    `@group(0) @binding(${i}) var<storage, ${b.access}> ${wgslName(b.name)}: array<${
      u32.includes(b.name) ? "u32" : "f32"
    }>;`
  ).join("\n");
}

/** What {@link pointwiseKernel} builds a kernel from. */
export interface PointwiseParts {
  /** Threads: the body runs once for each `i` in [0, n). */
  n: number;
  /** Storage bindings, in binding order (every one must be used by the body). */
  bindings: Binding[];
  /** WGSL statements run with `i: u32` the thread's linear index (bindings by {@link wgslName}). */
  body: string;
  /** Module-scope WGSL before `main` (helper functions, constants). */
  prelude?: string;
  /** Threads per workgroup (default {@link WORKGROUP_SIZE}; tests use 1 to fold the grid cheaply). */
  workgroupSize?: number;
}

/**
 * The skeleton of every one-thread-per-element kernel of this family: a 1D range of `n`
 * threads over a grid folded into (x, y) past 65535 workgroups, each thread recovering its
 * index as `gid.x + gid.y * (groups.x * size)` and returning past `n`.
 */
export function pointwiseKernel(name: string, parts: PointwiseParts): KernelSpec {
  const size = parts.workgroupSize ?? WORKGROUP_SIZE;
  const workgroups = linearWorkgroups(parts.n, size);
  const code = `${declare(parts.bindings)}
${parts.prelude ?? ""}
@compute @workgroup_size(${size})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x + gid.y * ${workgroups[0] * size}u;
  if (i >= ${parts.n}u) { return; }
  ${parts.body}
}
`;
  return { name, code, bindings: parts.bindings, workgroups };
}

function positive(name: string, values: Record<string, number>): void {
  for (const [key, v] of Object.entries(values)) {
    if (!(Number.isInteger(v) && v > 0)) {
      throw new RangeError(`${name}: ${key} must be a positive integer, got ${v}`);
    }
  }
}

function map(n: number, f: (i: number) => number): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = f(i);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Activations.

/** WGSL sigmoid without overflow: 1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) below. */
const SIGMOID_WGSL = `
fn sigmoid(x: f32) -> f32 {
  let e = exp(-abs(x));
  let s = 1.0 / (1.0 + e);
  return select(e * s, s, x >= 0.0);
}`;

function sigmoid(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
}

/** SiLU `y = x · sigmoid(x)`, bindings `x` [n] -> `y` [n]. */
export function siluForward(n: number): KernelSpec {
  positive("silu.forward", { n });
  return pointwiseKernel("silu.forward", {
    n,
    bindings: [input("x", n), output("y", n)],
    prelude: SIGMOID_WGSL,
    body: "let v = x[i];\n  y[i] = v * sigmoid(v);",
  });
}

/** Reference of {@link siluForward}. */
export function siluForwardRef(inputs: { x: Values }): { y: Float64Array } {
  const { x } = inputs;
  return { y: map(x.length, (i) => x[i] * sigmoid(x[i])) };
}

/** SiLU gradient `dx = dy · s (1 + x (1 - s))`, s = sigmoid(x); bindings `dy`, `x` -> `dx`. */
export function siluBackward(n: number, options: GradOptions = {}): KernelSpec {
  positive("silu.backward", { n });
  return pointwiseKernel("silu.backward", {
    n,
    bindings: [input("dy", n), input("x", n), output("dx", n)],
    prelude: SIGMOID_WGSL,
    body: `let v = x[i];
  let s = sigmoid(v);
  ${store("dx[i]", "dy[i] * (s * (1.0 + v * (1.0 - s)))", options)}`,
  });
}

/** Reference of {@link siluBackward}. */
export function siluBackwardRef(inputs: { dy: Values; x: Values }): { dx: Float64Array } {
  const { dy, x } = inputs;
  return {
    dx: map(x.length, (i) => {
      const s = sigmoid(x[i]);
      return dy[i] * s * (1 + x[i] * (1 - s));
    }),
  };
}

/**
 * erf in float64 to ~1e-16: below |x| = 3 the series 2/√π e^-x² Σ 2^n x^(2n+1) / (2n+1)!!
 * (positive terms, so no cancellation), above it the Laplace continued fraction of erfc.
 */
export function erf(x: number): number {
  const a = Math.abs(x);
  if (a < 3) {
    const z = x * x;
    let term = x;
    let sum = x;
    for (let n = 1; n < 500; n++) {
      term *= (2 * z) / (2 * n + 1);
      sum += term;
      if (Math.abs(term) < 1e-17 * Math.abs(sum)) break;
    }
    return (2 / Math.sqrt(Math.PI)) * Math.exp(-z) * sum;
  }
  // erfc(a) = e^-a² / √π · 1 / (a + (1/2) / (a + 1 / (a + (3/2) / (a + ...)))), a >= 3.
  let f = 0;
  for (let k = 80; k >= 1; k--) f = (k / 2) / (a + f);
  const erfc = Math.exp(-a * a) / Math.sqrt(Math.PI) / (a + f);
  return Math.sign(x) * (1 - erfc);
}

const TAYLOR_ERF = Array.from({ length: 12 }, (_, n) => {
  let factorial = 1;
  for (let k = 2; k <= n; k++) factorial *= k;
  return ((n % 2 === 0 ? 1 : -1) * 2) / Math.sqrt(Math.PI) / (factorial * (2 * n + 1));
});

/**
 * WGSL `erf_f32(x)`, absolute error ~2e-7 (relative ~2e-7 too, also near 0): the Maclaurin
 * series to x^23 below |x| = 1, above it 1 - erfc(|x|) with Numerical Recipes' Chebyshev
 * erfc (fractional error < 1.2e-7). Abramowitz-Stegun 7.1.26 (what tfjs's cpu backend uses)
 * has 1.5e-7 absolute error, i.e. large relative error near 0.
 */
export const ERF_WGSL = `
fn erf_f32(x: f32) -> f32 {
  let a = abs(x);
  if (a < 1.0) {
    let z = x * x;
    var p = ${f32(TAYLOR_ERF[11])};
${TAYLOR_ERF.slice(0, 11).reverse().map((c) => `    p = p * z + ${f32(c)};`).join("\n")}
    return x * p;
  }
  let t = 1.0 / (1.0 + 0.5 * a);
  let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
    t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
    t * (-0.82215223 + t * 0.17087277))))))));
  let erfc = t * exp(poly - a * a);
  return sign(x) * (1.0 - erfc);
}`;

const GELU_WGSL = `${ERF_WGSL}
fn gelu(x: f32) -> f32 {
  return (x * 0.5) * (erf_f32(x * ${f32(Math.SQRT1_2)}) + 1.0);
}
fn gelu_grad(x: f32) -> f32 {
  return 0.5 * (erf_f32(x * ${f32(Math.SQRT1_2)}) + 1.0) +
    x * exp(-0.5 * x * x) * ${f32(1 / Math.sqrt(2 * Math.PI))};
}`;

/** Exact GELU `y = 0.5 x (1 + erf(x / √2))` (layers.ts `gelu`), bindings `x` [n] -> `y` [n]. */
export function geluForward(n: number): KernelSpec {
  positive("gelu.forward", { n });
  return pointwiseKernel("gelu.forward", {
    n,
    bindings: [input("x", n), output("y", n)],
    prelude: GELU_WGSL,
    body: "y[i] = gelu(x[i]);",
  });
}

/** Reference of {@link geluForward}. */
export function geluForwardRef(inputs: { x: Values }): { y: Float64Array } {
  const { x } = inputs;
  return { y: map(x.length, (i) => 0.5 * x[i] * (1 + erf(x[i] * Math.SQRT1_2))) };
}

/** GELU gradient `dx = dy (Φ(x) + x φ(x))`; bindings `dy`, `x` -> `dx`. */
export function geluBackward(n: number, options: GradOptions = {}): KernelSpec {
  positive("gelu.backward", { n });
  return pointwiseKernel("gelu.backward", {
    n,
    bindings: [input("dy", n), input("x", n), output("dx", n)],
    prelude: GELU_WGSL,
    body: store("dx[i]", "dy[i] * gelu_grad(x[i])", options),
  });
}

/** Reference of {@link geluBackward}. */
export function geluBackwardRef(inputs: { dy: Values; x: Values }): { dx: Float64Array } {
  const { dy, x } = inputs;
  const c = 1 / Math.sqrt(2 * Math.PI);
  return {
    dx: map(x.length, (i) => {
      const v = x[i];
      return dy[i] * (0.5 * (1 + erf(v * Math.SQRT1_2)) + v * Math.exp(-0.5 * v * v) * c);
    }),
  };
}

// ---------------------------------------------------------------------------------------------
// Plumbing.

/** `y = a + b`, bindings `a`, `b` [n] -> `y` [n] (the residual adds). */
export function add(n: number): KernelSpec {
  positive("add", { n });
  return pointwiseKernel("add", {
    n,
    bindings: [input("a", n), input("b", n), output("y", n)],
    body: "y[i] = a[i] + b[i];",
  });
}

/** Reference of {@link add}. */
export function addRef(inputs: { a: Values; b: Values }): { y: Float64Array } {
  const { a, b } = inputs;
  return { y: map(a.length, (i) => a[i] + b[i]) };
}

/** Options of {@link copy}. */
export interface CopyOptions extends GradOptions {
  /** Multiplier of `src` (default 1, which multiplies by nothing). */
  scale?: number;
}

/**
 * `dst = scale · src` (or `dst += scale · src` with `accumulate`), bindings `src` [n] -> `dst`
 * [n]: how the engine routes a gradient into a buffer that may already hold another.
 */
export function copy(n: number, options: CopyOptions = {}): KernelSpec {
  positive("copy", { n });
  const scale = options.scale ?? 1;
  const value = scale === 1 ? "src[i]" : `${f32(scale)} * src[i]`;
  return pointwiseKernel(options.accumulate ? "copy.accumulate" : "copy", {
    n,
    bindings: [input("src", n), output("dst", n)],
    body: store("dst[i]", value, options),
  });
}

/** Reference of {@link copy}. */
export function copyRef(inputs: { src: Values }, options: CopyOptions = {}): { dst: Float64Array } {
  const { src } = inputs;
  const scale = Math.fround(options.scale ?? 1);
  return { dst: map(src.length, (i) => scale * src[i]) };
}

// ---------------------------------------------------------------------------------------------
// Scale-shift of the residual blocks.

/** Shape of the scale-shift: NHWC activations as [batch, pixels, channels]. */
export interface ScaleShiftShape {
  /** B. */
  batch: number;
  /** H · W. */
  pixels: number;
  /** C. */
  channels: number;
}

/**
 * `y = h · (1 + ss[b, c]) + ss[b, C + c]` (unet.ts ResBlock: scale then shift, from the time
 * MLP's [B, 2C] output); bindings `h` [B·P·C], `ss` [B·2C] -> `y` [B·P·C].
 */
export function scaleShiftForward(shape: ScaleShiftShape): KernelSpec {
  const { batch, pixels, channels: c } = shape;
  positive("scaleShift.forward", { batch, pixels, channels: c });
  const n = batch * pixels * c;
  return pointwiseKernel("scaleShift.forward", {
    n,
    bindings: [input("h", n), input("ss", batch * 2 * c), output("y", n)],
    body: `let c = i % ${c}u;
  let s = (i / ${pixels * c}u) * ${2 * c}u + c;
  y[i] = h[i] * (1.0 + ss[s]) + ss[s + ${c}u];`,
  });
}

/** Reference of {@link scaleShiftForward}. */
export function scaleShiftForwardRef(
  inputs: { h: Values; ss: Values },
  shape: ScaleShiftShape,
): { y: Float64Array } {
  const { h, ss } = inputs;
  const { pixels, channels: c } = shape;
  return {
    y: map(h.length, (i) => {
      const s = Math.floor(i / (pixels * c)) * 2 * c + (i % c);
      return h[i] * (1 + ss[s]) + ss[s + c];
    }),
  };
}

/**
 * Gradients of the scale-shift in one pass over `dy`: `dh = dy · (1 + scale)`, and `dss`
 * [B·2C] = (Σ_p dy · h, Σ_p dy) per (b, c). Bindings `dy`, `h` [B·P·C], `ss` [B·2C] -> `dh`
 * [B·P·C], `dss` [B·2C] (both accumulate with `accumulate`).
 *
 * One workgroup per (example, tile of TC channels), TC = min(32, next power of two of C):
 * its 256 / TC lanes stride over the pixels (lane l sums pixels l, l + lanes, ... in order),
 * then a fixed tree over the lanes in workgroup memory; reads are coalesced across channels.
 * Workgroups: B · ⌈C / TC⌉.
 */
export function scaleShiftBackward(shape: ScaleShiftShape, options: GradOptions = {}): KernelSpec {
  const { batch, pixels, channels: c } = shape;
  positive("scaleShift.backward", { batch, pixels, channels: c });
  const n = batch * pixels * c;
  let tc = 1;
  while (tc < c && tc < 32) tc *= 2;
  const lanes = WORKGROUP_SIZE / tc;
  const tiles = Math.ceil(c / tc);
  const bindings = [
    input("dy", n),
    input("h", n),
    input("ss", batch * 2 * c),
    output("dh", n),
    output("dss", batch * 2 * c),
  ];
  const code = `${declare(bindings)}
var<workgroup> sum_scale: array<f32, ${WORKGROUP_SIZE}>;
var<workgroup> sum_shift: array<f32, ${WORKGROUP_SIZE}>;
@compute @workgroup_size(${WORKGROUP_SIZE})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let b = wg.x / ${tiles}u;
  let cl = li % ${tc}u;
  let lane = li / ${tc}u;
  let c = (wg.x % ${tiles}u) * ${tc}u + cl;
  var a_scale = 0.0;
  var a_shift = 0.0;
  if (c < ${c}u) {
    let s1 = 1.0 + ss[b * ${2 * c}u + c];
    for (var p = lane; p < ${pixels}u; p = p + ${lanes}u) {
      let i = (b * ${pixels}u + p) * ${c}u + c;
      let g = dy[i];
      ${store("dh[i]", "g * s1", options)}
      a_scale = a_scale + g * h[i];
      a_shift = a_shift + g;
    }
  }
  sum_scale[li] = a_scale;
  sum_shift[li] = a_shift;
  workgroupBarrier();
  for (var s = ${lanes / 2}u; s > 0u; s = s >> 1u) {
    if (lane < s) {
      sum_scale[li] = sum_scale[li] + sum_scale[li + s * ${tc}u];
      sum_shift[li] = sum_shift[li] + sum_shift[li + s * ${tc}u];
    }
    workgroupBarrier();
  }
  if (lane == 0u && c < ${c}u) {
    let o = b * ${2 * c}u + c;
    ${store("dss[o]", "sum_scale[li]", options)}
    ${store(`dss[o + ${c}u]`, "sum_shift[li]", options)}
  }
}
`;
  return {
    name: "scaleShift.backward",
    code,
    bindings,
    workgroups: [batch * tiles, 1, 1],
  };
}

/** Reference of {@link scaleShiftBackward}. */
export function scaleShiftBackwardRef(
  inputs: { dy: Values; h: Values; ss: Values },
  shape: ScaleShiftShape,
): { dh: Float64Array; dss: Float64Array } {
  const { dy, h, ss } = inputs;
  const { batch, pixels, channels: c } = shape;
  const dh = new Float64Array(dy.length);
  const dss = new Float64Array(batch * 2 * c);
  for (let b = 0; b < batch; b++) {
    for (let p = 0; p < pixels; p++) {
      for (let k = 0; k < c; k++) {
        const i = (b * pixels + p) * c + k;
        dh[i] = dy[i] * (1 + ss[b * 2 * c + k]);
        dss[b * 2 * c + k] += dy[i] * h[i];
        dss[b * 2 * c + c + k] += dy[i];
      }
    }
  }
  return { dh, dss };
}

// ---------------------------------------------------------------------------------------------
// Channel concat (the U-Net's skip connections) and its backward.

/** Shape of a channel concat: [batch, pixels, ca] ++ [batch, pixels, cb]. */
export interface ConcatShape {
  /** B. */
  batch: number;
  /** H · W. */
  pixels: number;
  /** Channels of `a` (first). */
  ca: number;
  /** Channels of `b` (second). */
  cb: number;
}

/** `y = concat([a, b], channels)`, bindings `a` [B·P·ca], `b` [B·P·cb] -> `y` [B·P·(ca+cb)]. */
export function concatChannels(shape: ConcatShape): KernelSpec {
  const { batch, pixels, ca, cb } = shape;
  positive("concat.forward", { batch, pixels, ca, cb });
  const rows = batch * pixels;
  const c = ca + cb;
  return pointwiseKernel("concat.forward", {
    n: rows * c,
    bindings: [input("a", rows * ca), input("b", rows * cb), output("y", rows * c)],
    body: `let r = i / ${c}u;
  let k = i % ${c}u;
  if (k < ${ca}u) {
    y[i] = a[r * ${ca}u + k];
  } else {
    y[i] = b[r * ${cb}u + k - ${ca}u];
  }`,
  });
}

/** Reference of {@link concatChannels}. */
export function concatChannelsRef(
  inputs: { a: Values; b: Values },
  shape: ConcatShape,
): { y: Float64Array } {
  const { a, b } = inputs;
  const { ca, cb } = shape;
  const c = ca + cb;
  return {
    y: map(a.length / ca * c, (i) => {
      const r = Math.floor(i / c);
      const k = i % c;
      return k < ca ? a[r * ca + k] : b[r * cb + k - ca];
    }),
  };
}

/** Backward of {@link concatChannels}: bindings `dy` [B·P·(ca+cb)] -> `da` [B·P·ca], `db` [B·P·cb]. */
export function splitChannels(shape: ConcatShape, options: GradOptions = {}): KernelSpec {
  const { batch, pixels, ca, cb } = shape;
  positive("concat.backward", { batch, pixels, ca, cb });
  const rows = batch * pixels;
  const c = ca + cb;
  return pointwiseKernel("concat.backward", {
    n: rows * c,
    bindings: [input("dy", rows * c), output("da", rows * ca), output("db", rows * cb)],
    body: `let r = i / ${c}u;
  let k = i % ${c}u;
  if (k < ${ca}u) {
    ${store(`da[r * ${ca}u + k]`, "dy[i]", options)}
  } else {
    ${store(`db[r * ${cb}u + k - ${ca}u]`, "dy[i]", options)}
  }`,
  });
}

/** Reference of {@link splitChannels}. */
export function splitChannelsRef(
  inputs: { dy: Values },
  shape: ConcatShape,
): { da: Float64Array; db: Float64Array } {
  const { dy } = inputs;
  const { ca, cb } = shape;
  const rows = dy.length / (ca + cb);
  return {
    da: map(rows * ca, (i) => dy[Math.floor(i / ca) * (ca + cb) + (i % ca)]),
    db: map(rows * cb, (i) => dy[Math.floor(i / cb) * (ca + cb) + ca + (i % cb)]),
  };
}

// ---------------------------------------------------------------------------------------------
// Resampling.

/** An NHWC image batch. */
export interface ImageShape {
  /** B. */
  batch: number;
  /** H (of the input). */
  height: number;
  /** W (of the input). */
  width: number;
  /** C. */
  channels: number;
}

function evenImage(name: string, shape: ImageShape): void {
  positive(name, { ...shape });
  if (shape.height % 2 !== 0 || shape.width % 2 !== 0) {
    throw new RangeError(`${name}: ${shape.height}x${shape.width} is not even`);
  }
}

/**
 * pixel_unshuffle by 2 (layers.ts `pixelUnshuffle`): `y[b, i, j, 4c + 2 p1 + p2] =
 * x[b, 2i + p1, 2j + p2, c]`; bindings `x` [B·H·W·C] -> `y` [B·H/2·W/2·4C]. H, W even.
 */
export function pixelUnshuffleForward(shape: ImageShape): KernelSpec {
  evenImage("pixelUnshuffle.forward", shape);
  const { batch, height: h, width: w, channels: c } = shape;
  const n = batch * h * w * c;
  return pointwiseKernel("pixelUnshuffle.forward", {
    n,
    bindings: [input("x", n), output("y", n)],
    body: `let k = i % ${4 * c}u;
  let q = i / ${4 * c}u;
  let j = q % ${w / 2}u;
  let r = q / ${w / 2}u;
  let row = r % ${h / 2}u;
  let b = r / ${h / 2}u;
  let src = ((b * ${h}u + 2u * row + (k / 2u) % 2u) * ${w}u + 2u * j + k % 2u) * ${c}u + k / 4u;
  y[i] = x[src];`,
  });
}

function unshuffleIndex(i: number, shape: ImageShape): number {
  const { height: h, width: w, channels: c } = shape;
  const k = i % (4 * c);
  const q = Math.floor(i / (4 * c));
  const j = q % (w / 2);
  const r = Math.floor(q / (w / 2));
  const row = r % (h / 2);
  const b = Math.floor(r / (h / 2));
  const p1 = Math.floor(k / 2) % 2;
  const p2 = k % 2;
  return ((b * h + 2 * row + p1) * w + 2 * j + p2) * c + Math.floor(k / 4);
}

/** Reference of {@link pixelUnshuffleForward}. */
export function pixelUnshuffleForwardRef(
  inputs: { x: Values },
  shape: ImageShape,
): { y: Float64Array } {
  const { x } = inputs;
  return { y: map(x.length, (i) => x[unshuffleIndex(i, shape)]) };
}

/** Backward of {@link pixelUnshuffleForward} (a gather): bindings `dy` -> `dx` [B·H·W·C]. */
export function pixelUnshuffleBackward(shape: ImageShape, options: GradOptions = {}): KernelSpec {
  evenImage("pixelUnshuffle.backward", shape);
  const { batch, height: h, width: w, channels: c } = shape;
  const n = batch * h * w * c;
  return pointwiseKernel("pixelUnshuffle.backward", {
    n,
    bindings: [input("dy", n), output("dx", n)],
    body: `let k = i % ${c}u;
  let q = i / ${c}u;
  let col = q % ${w}u;
  let r = q / ${w}u;
  let row = r % ${h}u;
  let b = r / ${h}u;
  let src = ((b * ${h / 2}u + row / 2u) * ${w / 2}u + col / 2u) * ${4 * c}u + 4u * k +
    2u * (row % 2u) + col % 2u;
  ${store("dx[i]", "dy[src]", options)}`,
  });
}

/** Reference of {@link pixelUnshuffleBackward}. */
export function pixelUnshuffleBackwardRef(
  inputs: { dy: Values },
  shape: ImageShape,
): { dx: Float64Array } {
  const { dy } = inputs;
  const dx = new Float64Array(dy.length);
  for (let i = 0; i < dy.length; i++) dx[unshuffleIndex(i, shape)] = dy[i];
  return { dx };
}

/**
 * Nearest 2x upsampling (layers.ts `upsampleNearest2x`): `y[b, r, s, c] = x[b, r/2, s/2, c]`;
 * bindings `x` [B·H·W·C] -> `y` [B·2H·2W·C].
 */
export function upsampleForward(shape: ImageShape): KernelSpec {
  const { batch, height: h, width: w, channels: c } = shape;
  positive("upsample.forward", { batch, height: h, width: w, channels: c });
  const n = batch * h * w * c;
  return pointwiseKernel("upsample.forward", {
    n: 4 * n,
    bindings: [input("x", n), output("y", 4 * n)],
    body: `let k = i % ${c}u;
  let q = i / ${c}u;
  let col = q % ${2 * w}u;
  let r = q / ${2 * w}u;
  let row = r % ${2 * h}u;
  let b = r / ${2 * h}u;
  y[i] = x[((b * ${h}u + row / 2u) * ${w}u + col / 2u) * ${c}u + k];`,
  });
}

/** Reference of {@link upsampleForward}. */
export function upsampleForwardRef(inputs: { x: Values }, shape: ImageShape): { y: Float64Array } {
  const { x } = inputs;
  const { height: h, width: w, channels: c } = shape;
  return {
    y: map(4 * x.length, (i) => {
      const k = i % c;
      const q = Math.floor(i / c);
      const col = q % (2 * w);
      const r = Math.floor(q / (2 * w));
      const row = r % (2 * h);
      const b = Math.floor(r / (2 * h));
      return x[((b * h + Math.floor(row / 2)) * w + Math.floor(col / 2)) * c + k];
    }),
  };
}

/**
 * Backward of {@link upsampleForward}: `dx` = the sum of its 4 copies' gradients, in the order
 * (0, 0), (0, 1), (1, 0), (1, 1); bindings `dy` [B·2H·2W·C] -> `dx` [B·H·W·C].
 */
export function upsampleBackward(shape: ImageShape, options: GradOptions = {}): KernelSpec {
  const { batch, height: h, width: w, channels: c } = shape;
  positive("upsample.backward", { batch, height: h, width: w, channels: c });
  const n = batch * h * w * c;
  return pointwiseKernel("upsample.backward", {
    n,
    bindings: [input("dy", 4 * n), output("dx", n)],
    body: `let k = i % ${c}u;
  let q = i / ${c}u;
  let col = q % ${w}u;
  let r = q / ${w}u;
  let row = r % ${h}u;
  let b = r / ${h}u;
  let top = ((b * ${2 * h}u + 2u * row) * ${2 * w}u + 2u * col) * ${c}u + k;
  let bottom = top + ${2 * w * c}u;
  let v = ((dy[top] + dy[top + ${c}u]) + dy[bottom]) + dy[bottom + ${c}u];
  ${store("dx[i]", "v", options)}`,
  });
}

/** Reference of {@link upsampleBackward}. */
export function upsampleBackwardRef(
  inputs: { dy: Values },
  shape: ImageShape,
): { dx: Float64Array } {
  const { dy } = inputs;
  const { height: h, width: w, channels: c } = shape;
  return {
    dx: map(dy.length / 4, (i) => {
      const k = i % c;
      const q = Math.floor(i / c);
      const col = q % w;
      const r = Math.floor(q / w);
      const row = r % h;
      const b = Math.floor(r / h);
      const top = ((b * 2 * h + 2 * row) * 2 * w + 2 * col) * c + k;
      const bottom = top + 2 * w * c;
      return dy[top] + dy[top + c] + dy[bottom] + dy[bottom + c];
    }),
  };
}

// ---------------------------------------------------------------------------------------------
// Sinusoidal time embedding.

/** Shape of the time embedding. */
export interface TimeEmbeddingShape {
  /** B. */
  batch: number;
  /** Embedding size (even, at least 4). */
  dim: number;
}

/** The float32 frequencies exp(-ln(10000) i / (dim/2 - 1)), i < dim/2, as layers.ts. */
export function timeFrequencies(dim: number): Float32Array<ArrayBuffer> {
  const half = dim / 2;
  const freqs = new Float32Array(half);
  const scale = Math.log(10000) / (half - 1);
  for (let i = 0; i < half; i++) freqs[i] = Math.exp(-scale * i);
  return freqs;
}

/** `v` with all but its `bits` leading significant bits cleared. */
function leadingBits(v: number, bits: number): number {
  const q = 2 ** (Math.floor(Math.log2(Math.abs(v))) - bits + 1);
  return Math.trunc(v / q) * q;
}

const PIO2_1 = leadingBits(Math.PI / 2, 11);
const PIO2_2 = leadingBits(Math.PI / 2 - PIO2_1, 11);
const PIO2_3 = Math.PI / 2 - PIO2_1 - PIO2_2;

/**
 * WGSL `sin_cos(x)` = (sin x, cos x) to ~1e-7 absolute for |x| < 2^13 · π/2 (timesteps below
 * ~12000): Cody-Waite reduction by π/2 in three parts (k · part exact for k < 2^13), then
 * Taylor polynomials on [-π/4, π/4]. GPU `sin`/`cos` guarantee only 2^-11 and only on [-π, π].
 */
const SIN_COS_WGSL = `
fn sin_cos(x: f32) -> vec2<f32> {
  let k = round(x * ${f32(2 / Math.PI)});
  let r = ((x - k * ${f32(PIO2_1)}) - k * ${f32(PIO2_2)}) - k * ${f32(PIO2_3)};
  let z = r * r;
  let s = r + r * z * (${f32(-1 / 6)} + z * (${f32(1 / 120)} + z * (${f32(-1 / 5040)} +
    z * ${f32(1 / 362880)})));
  let c = 1.0 + z * (-0.5 + z * (${f32(1 / 24)} + z * (${f32(-1 / 720)} + z * (${
  f32(1 / 40320)
} + z * ${f32(-1 / 3628800)}))));
  let q = u32(i32(k) & 3);
  if (q == 0u) { return vec2<f32>(s, c); }
  if (q == 1u) { return vec2<f32>(c, -s); }
  if (q == 2u) { return vec2<f32>(-s, -c); }
  return vec2<f32>(-c, s);
}`;

/**
 * Sinusoidal embedding (layers.ts `sinusoidalEmbedding`): `y[b, i] = sin(t_b f_i)` for i < dim/2,
 * `cos(t_b f_{i - dim/2})` after, the argument the float32 product (as tfjs), the float32
 * frequencies {@link timeFrequencies} baked in. Bindings `t` [B] (float timesteps) -> `y` [B·dim].
 */
export function timeEmbedding(shape: TimeEmbeddingShape): KernelSpec {
  const { batch, dim } = shape;
  positive("timeEmbedding", { batch, dim });
  if (dim % 2 !== 0 || dim < 4) {
    throw new RangeError(`timeEmbedding: dim ${dim} must be even and at least 4`);
  }
  const half = dim / 2;
  const freqs = Array.from(timeFrequencies(dim), f32).join(", ");
  return pointwiseKernel("timeEmbedding", {
    n: batch * dim,
    bindings: [input("t", batch), output("y", batch * dim)],
    prelude: `${SIN_COS_WGSL}
var<private> FREQS: array<f32, ${half}> = array<f32, ${half}>(${freqs});`,
    body: `let k = i % ${dim}u;
  let f = FREQS[k % ${half}u];
  let sc = sin_cos(t[i / ${dim}u] * f);
  y[i] = select(sc.y, sc.x, k < ${half}u);`,
  });
}

/** Reference of {@link timeEmbedding} (the argument rounded to float32, as tfjs and the kernel). */
export function timeEmbeddingRef(
  inputs: { t: Values },
  shape: TimeEmbeddingShape,
): { y: Float64Array } {
  const { t } = inputs;
  const { dim } = shape;
  const half = dim / 2;
  const freqs = timeFrequencies(dim);
  return {
    y: map(t.length * dim, (i) => {
      const k = i % dim;
      const arg = Math.fround(Math.fround(t[Math.floor(i / dim)]) * freqs[k % half]);
      return k < half ? Math.sin(arg) : Math.cos(arg);
    }),
  };
}

// ---------------------------------------------------------------------------------------------
// Dropout by a host-written mask.

/**
 * Dropout `y = x · mask`, bindings `x`, `mask` [n] -> `y` [n]; the host writes the mask
 * (layers.ts `dropoutMask`: 0 or 1 / (1 - rate), drawn in forward order).
 */
export function dropoutForward(n: number): KernelSpec {
  positive("dropout.forward", { n });
  return pointwiseKernel("dropout.forward", {
    n,
    bindings: [input("x", n), input("mask", n), output("y", n)],
    body: "y[i] = x[i] * mask[i];",
  });
}

/** Reference of {@link dropoutForward}. */
export function dropoutForwardRef(inputs: { x: Values; mask: Values }): { y: Float64Array } {
  const { x, mask } = inputs;
  return { y: map(x.length, (i) => x[i] * mask[i]) };
}

/** Dropout gradient `dx = dy · mask`, bindings `dy`, `mask` [n] -> `dx` [n]. */
export function dropoutBackward(n: number, options: GradOptions = {}): KernelSpec {
  positive("dropout.backward", { n });
  return pointwiseKernel("dropout.backward", {
    n,
    bindings: [input("dy", n), input("mask", n), output("dx", n)],
    body: store("dx[i]", "dy[i] * mask[i]", options),
  });
}

/** Reference of {@link dropoutBackward}. */
export function dropoutBackwardRef(inputs: { dy: Values; mask: Values }): { dx: Float64Array } {
  const { dy, mask } = inputs;
  return { dx: map(dy.length, (i) => dy[i] * mask[i]) };
}

// ---------------------------------------------------------------------------------------------
// Classifier-free guidance: the null-embedding mix of conditioning.ts Tau.

/** Shape of the null mix: [batch, width] label embeddings. */
export interface NullMixShape {
  /** B. */
  batch: number;
  /** Embedding width (tokens · token width). */
  width: number;
}

/**
 * `y = h · (1 - m) + nul · m`, m = drop[b] (1: example b's labels dropped), as conditioning.ts
 * Tau; bindings `h` [B·W], `nul` [W], `drop` [B] (0/1 floats) -> `y` [B·W].
 */
export function nullMixForward(shape: NullMixShape): KernelSpec {
  const { batch, width } = shape;
  positive("nullMix.forward", { batch, width });
  const n = batch * width;
  return pointwiseKernel("nullMix.forward", {
    n,
    bindings: [input("h", n), input("nul", width), input("drop", batch), output("y", n)],
    body: `let m = drop[i / ${width}u];
  y[i] = h[i] * (1.0 - m) + nul[i % ${width}u] * m;`,
  });
}

/** Reference of {@link nullMixForward}. */
export function nullMixForwardRef(
  inputs: { h: Values; nul: Values; drop: Values },
): { y: Float64Array } {
  const { h, nul, drop } = inputs;
  const w = nul.length;
  return {
    y: map(h.length, (i) => {
      const m = drop[Math.floor(i / w)];
      return h[i] * (1 - m) + nul[i % w] * m;
    }),
  };
}

/**
 * Gradients of the null mix: `dh = dy · (1 - m)`, `dnul[w] = Σ_b dy[b, w] · m_b` (b in order);
 * one thread per column w. Bindings `dy` [B·W], `drop` [B] -> `dh` [B·W], `dnul` [W].
 */
export function nullMixBackward(shape: NullMixShape, options: GradOptions = {}): KernelSpec {
  const { batch, width } = shape;
  positive("nullMix.backward", { batch, width });
  const n = batch * width;
  return pointwiseKernel("nullMix.backward", {
    n: width,
    bindings: [input("dy", n), input("drop", batch), output("dh", n), output("dnul", width)],
    body: `var sum = 0.0;
  for (var b = 0u; b < ${batch}u; b = b + 1u) {
    let m = drop[b];
    let j = b * ${width}u + i;
    let g = dy[j];
    ${store("dh[j]", "g * (1.0 - m)", options)}
    sum = sum + g * m;
  }
  ${store("dnul[i]", "sum", options)}`,
  });
}

/** Reference of {@link nullMixBackward}. */
export function nullMixBackwardRef(
  inputs: { dy: Values; drop: Values },
  shape: NullMixShape,
): { dh: Float64Array; dnul: Float64Array } {
  const { dy, drop } = inputs;
  const { batch, width } = shape;
  const dh = map(dy.length, (i) => dy[i] * (1 - drop[Math.floor(i / width)]));
  const dnul = new Float64Array(width);
  for (let b = 0; b < batch; b++) {
    for (let w = 0; w < width; w++) dnul[w] += dy[b * width + w] * drop[b];
  }
  return { dh, dnul };
}
