/**
 * Matrix products: a batched GEMM `C = alpha op(A) op(B) (+ C)`, the linear layer
 * `y = x W + b` with its three gradients, and the two generators the conv family shares
 * ({@link gemmKernel}, {@link columnSumKernels}).
 *
 * Tiling ({@link gemmKernel}): one workgroup computes a `bm x bn` tile of C (default 64x64 with
 * 256 threads, each owning a `tm x tn` = 4x4 block of outputs strided by the thread grid, so
 * that neighbouring threads write neighbouring columns). The K loop walks `bk`-wide slabs: the
 * 256 threads stage an `bm x bk` slab of A and a `bk x bn` slab of B in workgroup memory (rows
 * padded by one float against bank conflicts), with the thread-to-element mapping chosen so
 * that consecutive threads read consecutive addresses of whichever index is contiguous in
 * global memory; out-of-range rows, columns and K are loaded as zero and never stored, so no
 * size needs to be a tile multiple. Each output is one thread's `fma` chain over K in
 * ascending order, whatever the tile, so tile choice does not change a bit; a split-K variant
 * (workgroup z = K chunk, partial sums to a `tmp` binding, then a fixed-order sum over chunks)
 * serves the conv weight gradient, whose K (pixels) is long and whose output is small.
 *
 * Column sums ({@link columnSumKernels}, the bias gradients): a workgroup sums 64 columns over
 * a chunk of rows with 4 lanes per column (rows strided by 4, then a fixed pairwise combine);
 * with several chunks, a second pass adds the chunks' partial sums in order.
 * @module
 */
import {
  type Binding,
  ceilDiv,
  declareBindings,
  f32,
  type KernelSpec,
  linearWorkgroups,
  MAX_WORKGROUPS,
} from "../kernel.ts";

/** Register/workgroup tiling of {@link gemmKernel}: `(bm / tm) * (bn / tn)` threads. */
export interface GemmTile {
  /** Rows of C per workgroup. */
  bm: number;
  /** Columns of C per workgroup. */
  bn: number;
  /** K per staged slab. */
  bk: number;
  /** Rows of C per thread. */
  tm: number;
  /** Columns of C per thread. */
  tn: number;
}

/** The tiles the builders choose from (`large` has 4 fmas per workgroup-memory read, not 2). */
export const GEMM_TILES: Readonly<Record<"small" | "medium" | "large", GemmTile>> = {
  small: { bm: 32, bn: 32, bk: 16, tm: 2, tn: 2 },
  medium: { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 },
  large: { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8 },
};

/**
 * The default tile for an `m x n` product over `slices` workgroup layers: 64x64 unless that
 * leaves fewer than 128 workgroups (small GEMMs: linear layers at batch 32, 8x8 convs), then
 * 32x32 for more parallelism. `large` is only used when asked for.
 */
export function chooseTile(m: number, n: number, slices = 1): GemmTile {
  const medium = ceilDiv(m, 64) * ceilDiv(n, 64) * slices;
  return medium >= 128 ? GEMM_TILES.medium : GEMM_TILES.small;
}

function checkTile(t: GemmTile): number {
  const threads = (t.bm / t.tm) * (t.bn / t.tn);
  const ok = [t.bm, t.bn, t.bk, t.tm, t.tn].every((v) => Number.isInteger(v) && v > 0) &&
    t.bm % t.tm === 0 && t.bn % t.tn === 0 && threads <= 256 &&
    (t.bm * t.bk) % threads === 0 && (t.bn * t.bk) % threads === 0 &&
    (t.bm + 1 + t.bn + 1) * t.bk * 4 <= 16384;
  if (!ok) throw new RangeError(`gemm: unusable tile ${JSON.stringify(t)}`);
  return threads;
}

/**
 * One GEMM-shaped kernel for {@link gemmKernel}: `out(z, i, j) = sum_k A(z, i, k) B(z, k, j)`
 * for i < m, j < n, with the operands read and the result written by WGSL snippets.
 */
export interface GemmPlan {
  /** Kernel name. */
  name: string;
  /** Rows of the product. */
  m: number;
  /** Columns of the product. */
  n: number;
  /** Reduction length. */
  k: number;
  /** Workgroup layers (`workgroups[2]`): batch entries, or K chunks with `kChunk`. */
  slices: number;
  /** When set, layer z reduces only k in `[z * kChunk, min(k, (z + 1) * kChunk))`. */
  kChunk?: number;
  /** Storage bindings, in binding order. */
  bindings: Binding[];
  /** Extra WGSL (constants) the snippets use. */
  prelude?: string;
  /** Body of `fn loadA(z: u32, row: u32, col: u32) -> f32` (row < m, col < k guaranteed). */
  loadA: string;
  /** Which index of A is contiguous in memory: `k` (row-major A) or `m` (transposed). */
  aContiguous: "k" | "m";
  /** Body of `fn loadB(z: u32, row: u32, col: u32) -> f32` (row < k, col < n guaranteed). */
  loadB: string;
  /** Which index of B is contiguous in memory: `n` (row-major B) or `k` (transposed). */
  bContiguous: "k" | "n";
  /** Body of `fn store(z: u32, row: u32, col: u32, v: f32)` (row < m, col < n guaranteed). */
  store: string;
  /** Tiling (default {@link chooseTile}). */
  tile?: GemmTile;
}

/** Builds the tiled GEMM kernel of `plan` (see the module header for the tiling). */
export function gemmKernel(plan: GemmPlan): KernelSpec {
  const t = plan.tile ?? chooseTile(plan.m, plan.n, plan.slices);
  const threads = checkTile(t);
  const gx = ceilDiv(plan.n, t.bn);
  const gy = ceilDiv(plan.m, t.bm);
  if (gx > MAX_WORKGROUPS || gy > MAX_WORKGROUPS || plan.slices > MAX_WORKGROUPS) {
    throw new RangeError(`${plan.name}: grid ${gx}x${gy}x${plan.slices} passes ${MAX_WORKGROUPS}`);
  }
  const tx = t.bn / t.tn;
  const ty = t.bm / t.tm;
  const as = t.bm + 1;
  const bs = t.bn + 1;
  const kChunk = plan.kChunk ?? plan.k;
  const aLoad = [];
  for (let i = 0; i < (t.bm * t.bk) / threads; i++) {
    const l = `lid + ${i * threads}u`;
    const [m, kk] = plan.aContiguous === "k"
      ? [`(${l}) / ${t.bk}u`, `(${l}) % ${t.bk}u`]
      : [`(${l}) % ${t.bm}u`, `(${l}) / ${t.bm}u`];
    aLoad.push(`  {
      let m = ${m}; let kk = ${kk};
      let gr = row0 + m; let gc = kt + kk;
      var v = 0.0;
      if (gr < GM && gc < kEnd) { v = loadA(z, gr, gc); }
      As[kk * ${as}u + m] = v;
    }`);
  }
  const bLoad = [];
  for (let i = 0; i < (t.bn * t.bk) / threads; i++) {
    const l = `lid + ${i * threads}u`;
    const [n, kk] = plan.bContiguous === "n"
      ? [`(${l}) % ${t.bn}u`, `(${l}) / ${t.bn}u`]
      : [`(${l}) / ${t.bk}u`, `(${l}) % ${t.bk}u`];
    bLoad.push(`  {
      let n = ${n}; let kk = ${kk};
      let gr = kt + kk; let gc = col0 + n;
      var v = 0.0;
      if (gr < kEnd && gc < GN) { v = loadB(z, gr, gc); }
      Bs[kk * ${bs}u + n] = v;
    }`);
  }
  const decl = [];
  const reads = [];
  const fmas = [];
  const stores = [];
  for (let i = 0; i < t.tm; i++) {
    reads.push(`let a${i} = As[kk * ${as}u + ty + ${i * ty}u];`);
    for (let j = 0; j < t.tn; j++) {
      decl.push(`var c${i}_${j} = 0.0;`);
      fmas.push(`c${i}_${j} = fma(a${i}, b${j}, c${i}_${j});`);
      stores.push(
        `if (row0 + ty + ${i * ty}u < GM && col0 + tx + ${j * tx}u < GN) ` +
          `{ store(z, row0 + ty + ${i * ty}u, col0 + tx + ${j * tx}u, c${i}_${j}); }`,
      );
    }
  }
  for (let j = 0; j < t.tn; j++) reads.push(`let b${j} = Bs[kk * ${bs}u + tx + ${j * tx}u];`);
  const code = `${declareBindings(plan.bindings)}
const GM = ${plan.m}u;
const GN = ${plan.n}u;
const GK = ${plan.k}u;
${plan.prelude ?? ""}
var<workgroup> As: array<f32, ${t.bk * as}>;
var<workgroup> Bs: array<f32, ${t.bk * bs}>;

fn loadA(z: u32, row: u32, col: u32) -> f32 {
${plan.loadA}
}

fn loadB(z: u32, row: u32, col: u32) -> f32 {
${plan.loadB}
}

fn store(z: u32, row: u32, col: u32, v: f32) {
${plan.store}
}

@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let z = wid.z;
  let row0 = wid.y * ${t.bm}u;
  let col0 = wid.x * ${t.bn}u;
  let tx = lid % ${tx}u;
  let ty = lid / ${tx}u;
  let kBegin = ${plan.kChunk === undefined ? "0u" : `z * ${kChunk}u`};
  let kEnd = min(GK, kBegin + ${kChunk}u);
  ${decl.join("\n  ")}
  for (var kt = kBegin; kt < kEnd; kt += ${t.bk}u) {
  ${aLoad.join("\n  ")}
  ${bLoad.join("\n  ")}
    workgroupBarrier();
    for (var kk = 0u; kk < ${t.bk}u; kk++) {
      ${reads.join("\n      ")}
      ${fmas.join("\n      ")}
    }
    workgroupBarrier();
  }
  ${stores.join("\n  ")}
}
`;
  return { name: plan.name, code, bindings: plan.bindings, workgroups: [gx, gy, plan.slices] };
}

/** Shape of {@link matmul}: `batch` independent products of op(A) [m, k] and op(B) [k, n]. */
export interface MatmulShape {
  /** Independent products, stored one after the other. */
  batch: number;
  /** Rows of C. */
  m: number;
  /** Reduction length. */
  k: number;
  /** Columns of C. */
  n: number;
  /** A is stored [k, m] (per batch) and used transposed. */
  transA?: boolean;
  /** B is stored [n, k] (per batch) and used transposed. */
  transB?: boolean;
}

/** Options of {@link matmul}. */
export interface MatmulOptions {
  /** Scale of the product (default 1). */
  alpha?: number;
  /** Add to C instead of overwriting it (c is read_write either way). */
  accumulate?: boolean;
  /** Tiling (default {@link chooseTile}). */
  tile?: GemmTile;
}

/**
 * `C[b] = alpha op(A[b]) op(B[b]) (+ C[b])` for b < batch. Bindings: `a` [batch*m*k] read,
 * `b` [batch*k*n] read, `c` [batch*m*n] read_write. One dispatch, batch on workgroups.z
 * (batch <= 65535).
 */
export function matmul(s: MatmulShape, options: MatmulOptions = {}): KernelSpec {
  const { batch, m, k, n } = s;
  const alpha = options.alpha ?? 1;
  const scaled = alpha === 1 ? "v" : `${f32(alpha)} * v`;
  const bindings: Binding[] = [
    { name: "a", access: "read", length: batch * m * k },
    { name: "b", access: "read", length: batch * k * n },
    { name: "c", access: "read_write", length: batch * m * n },
  ];
  return gemmKernel({
    name: `matmul.${s.transA ? "t" : "n"}${s.transB ? "t" : "n"}`,
    m,
    n,
    k,
    slices: batch,
    bindings,
    loadA: s.transA
      ? `  return a[z * ${m * k}u + col * GM + row];`
      : `  return a[z * ${m * k}u + row * GK + col];`,
    aContiguous: s.transA ? "m" : "k",
    loadB: s.transB
      ? `  return b[z * ${k * n}u + col * GK + row];`
      : `  return b[z * ${k * n}u + row * GN + col];`,
    bContiguous: s.transB ? "k" : "n",
    store: `  let i = z * ${m * n}u + row * GN + col;\n  c[i] = ${
      options.accumulate ? `${scaled} + c[i]` : scaled
    };`,
    tile: options.tile,
  });
}

/** Reference of {@link matmul} without accumulation: `alpha op(A) op(B)` in float64. */
export function matmulRef(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  s: MatmulShape & { alpha?: number },
): Float64Array {
  const { batch, m, k, n } = s;
  const alpha = s.alpha ?? 1;
  const c = new Float64Array(batch * m * n);
  for (let z = 0; z < batch; z++) {
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let sum = 0;
        for (let p = 0; p < k; p++) {
          const av = s.transA ? a[z * m * k + p * m + i] : a[z * m * k + i * k + p];
          const bv = s.transB ? b[z * k * n + j * k + p] : b[z * k * n + p * n + j];
          sum += av * bv;
        }
        c[z * m * n + i * n + j] = alpha * sum;
      }
    }
  }
  return c;
}

/** Shape of a linear layer `y = x W + b`: x [rows, cin], W [cin, cout], b [cout]. */
export interface LinearShape {
  /** Rows of x (batch, or batch * tokens). */
  rows: number;
  /** Input features. */
  cin: number;
  /** Output features. */
  cout: number;
}

/** Options of the gradient builders. */
export interface GradOptions {
  /** Add to the gradient binding instead of overwriting it. */
  accumulate?: boolean;
  /** Tiling (default {@link chooseTile}). */
  tile?: GemmTile;
}

function rw(accumulate: boolean | undefined, target: string, value: string): string {
  return `  ${target} = ${accumulate ? `${value} + ${target}` : value};`;
}

/**
 * `y = x W (+ b)`. Bindings: `x` [rows*cin] read, `w` [cin*cout] read, `b` [cout] read (only
 * with `bias`, the default), `y` [rows*cout] read_write (overwritten).
 */
export function linearForward(
  s: LinearShape,
  options: { bias?: boolean; tile?: GemmTile } = {},
): KernelSpec {
  const bias = options.bias ?? true;
  const bindings: Binding[] = [
    { name: "x", access: "read", length: s.rows * s.cin },
    { name: "w", access: "read", length: s.cin * s.cout },
    ...(bias ? [{ name: "b", access: "read" as const, length: s.cout }] : []),
    { name: "y", access: "read_write", length: s.rows * s.cout },
  ];
  return gemmKernel({
    name: "linear.forward",
    m: s.rows,
    n: s.cout,
    k: s.cin,
    slices: 1,
    bindings,
    loadA: "  return x[row * GK + col];",
    aContiguous: "k",
    loadB: "  return w[row * GN + col];",
    bContiguous: "n",
    store: `  y[row * GN + col] = ${bias ? "v + b[col]" : "v"};`,
    tile: options.tile,
  });
}

/** Reference of {@link linearForward} in float64 (`b` undefined: no bias). */
export function linearForwardRef(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  b: ArrayLike<number> | undefined,
  s: LinearShape,
): Float64Array {
  const y = matmulRef(x, w, { batch: 1, m: s.rows, k: s.cin, n: s.cout });
  if (b !== undefined) { for (let i = 0; i < y.length; i++) y[i] += b[i % s.cout]; }
  return y;
}

/**
 * `dx = dy W^T`. Bindings: `dy` [rows*cout] read, `w` [cin*cout] read, `dx` [rows*cin]
 * read_write.
 */
export function linearInputGrad(s: LinearShape, options: GradOptions = {}): KernelSpec {
  return gemmKernel({
    name: "linear.inputGrad",
    m: s.rows,
    n: s.cin,
    k: s.cout,
    slices: 1,
    bindings: [
      { name: "dy", access: "read", length: s.rows * s.cout },
      { name: "w", access: "read", length: s.cin * s.cout },
      { name: "dx", access: "read_write", length: s.rows * s.cin },
    ],
    loadA: "  return dy[row * GK + col];",
    aContiguous: "k",
    loadB: "  return w[col * GK + row];",
    bContiguous: "k",
    store: rw(options.accumulate, "dx[row * GN + col]", "v"),
    tile: options.tile,
  });
}

/** Reference of {@link linearInputGrad} (no accumulation) in float64. */
export function linearInputGradRef(
  dy: ArrayLike<number>,
  w: ArrayLike<number>,
  s: LinearShape,
): Float64Array {
  return matmulRef(dy, w, { batch: 1, m: s.rows, k: s.cout, n: s.cin, transB: true });
}

/**
 * `dW = x^T dy`, reduced over rows in order by one thread per output. Bindings: `x`
 * [rows*cin] read, `dy` [rows*cout] read, `dw` [cin*cout] read_write.
 */
export function linearWeightGrad(s: LinearShape, options: GradOptions = {}): KernelSpec {
  return gemmKernel({
    name: "linear.weightGrad",
    m: s.cin,
    n: s.cout,
    k: s.rows,
    slices: 1,
    bindings: [
      { name: "x", access: "read", length: s.rows * s.cin },
      { name: "dy", access: "read", length: s.rows * s.cout },
      { name: "dw", access: "read_write", length: s.cin * s.cout },
    ],
    loadA: "  return x[col * GM + row];",
    aContiguous: "m",
    loadB: "  return dy[row * GN + col];",
    bContiguous: "n",
    store: rw(options.accumulate, "dw[row * GN + col]", "v"),
    tile: options.tile,
  });
}

/** Reference of {@link linearWeightGrad} (no accumulation) in float64. */
export function linearWeightGradRef(
  x: ArrayLike<number>,
  dy: ArrayLike<number>,
  s: LinearShape,
): Float64Array {
  return matmulRef(x, dy, { batch: 1, m: s.cin, k: s.rows, n: s.cout, transA: true });
}

/**
 * `db = sum over rows of dy` ({@link columnSumKernels}: one pass for rows < 2048, else two
 * through `tmp` [chunks*cout]). Bindings: `dy` [rows*cout] read, `db` [cout] read_write.
 */
export function linearBiasGrad(
  s: LinearShape,
  options: { accumulate?: boolean; chunks?: number } = {},
): KernelSpec | KernelSpec[] {
  return columnSumKernels({ rows: s.rows, cols: s.cout }, {
    name: "linear.biasGrad",
    ...options,
  });
}

/** Reference of {@link linearBiasGrad} (no accumulation) in float64. */
export function linearBiasGradRef(dy: ArrayLike<number>, s: LinearShape): Float64Array {
  return columnSumRef(dy, { rows: s.rows, cols: s.cout });
}

/** Rows of a column sum a workgroup's chunk covers at least, and the most chunks. */
const SUM_CHUNK = 1024;
const SUM_MAX_CHUNKS = 128;
const SUM_COLS = 64;
const SUM_LANES = 4;

/** Chunks (row ranges reduced by separate workgroups) of a column sum over `rows`. */
export function columnSumChunks(rows: number): number {
  return Math.min(SUM_MAX_CHUNKS, Math.max(1, Math.floor(rows / SUM_CHUNK)));
}

/**
 * `out[c] (+)= sum_r input[r * cols + c]` over rows in a fixed order. With one chunk (rows
 * below 2048 by default) one kernel; else two: pass 1 writes per-chunk partial sums to `tmp`
 * [chunks*cols] (read_write), pass 2 adds them in chunk order into `out`. Bindings default to
 * `dy` (input) and `db` (output).
 */
export function columnSumKernels(
  s: { rows: number; cols: number },
  options: {
    name?: string;
    accumulate?: boolean;
    chunks?: number;
    input?: string;
    output?: string;
  } = {},
): KernelSpec | KernelSpec[] {
  const { rows, cols } = s;
  const name = options.name ?? "columnSum";
  const input = options.input ?? "dy";
  const output = options.output ?? "db";
  const chunks = Math.max(1, Math.min(options.chunks ?? columnSumChunks(rows), rows));
  const chunkRows = ceilDiv(rows, chunks);
  const inBinding: Binding = { name: input, access: "read", length: rows * cols };
  const outBinding: Binding = { name: output, access: "read_write", length: cols };
  const tmpBinding: Binding = { name: "tmp", access: "read_write", length: chunks * cols };
  const single = chunks === 1;
  const pass1Bindings = single ? [inBinding, outBinding] : [inBinding, tmpBinding];
  const target = single ? `${output}[c]` : `tmp[chunk * ${cols}u + c]`;
  const pass1: KernelSpec = {
    name: single ? name : `${name}.partial`,
    bindings: pass1Bindings,
    workgroups: [ceilDiv(cols, SUM_COLS), chunks, 1],
    code: `${declareBindings(pass1Bindings)}
var<workgroup> part: array<f32, ${SUM_COLS * SUM_LANES}>;

@compute @workgroup_size(${SUM_COLS}, ${SUM_LANES})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let c = wid.x * ${SUM_COLS}u + lid.x;
  let chunk = wid.y;
  let rBegin = chunk * ${chunkRows}u;
  let rEnd = min(${rows}u, rBegin + ${chunkRows}u);
  var sum = 0.0;
  if (c < ${cols}u) {
    for (var r = rBegin + lid.y; r < rEnd; r += ${SUM_LANES}u) {
      sum += ${input}[r * ${cols}u + c];
    }
  }
  part[lid.y * ${SUM_COLS}u + lid.x] = sum;
  workgroupBarrier();
  if (lid.y == 0u && c < ${cols}u) {
    let v = (part[lid.x] + part[${SUM_COLS}u + lid.x]) +
      (part[${2 * SUM_COLS}u + lid.x] + part[${3 * SUM_COLS}u + lid.x]);
${rw(single && options.accumulate, target, "v")}
  }
}
`,
  };
  if (single) return pass1;
  return [
    pass1,
    sumChunksKernel({ chunks, length: cols }, {
      name: `${name}.reduce`,
      output,
      accumulate: options.accumulate,
    }),
  ];
}

/**
 * `out[i] (+)= sum_{c < chunks} tmp[c * length + i]`, chunks added in order: the second pass of
 * the split reductions. Bindings: `tmp` [chunks*length] read, `output` [length] read_write.
 */
export function sumChunksKernel(
  s: { chunks: number; length: number },
  options: { name?: string; output: string; accumulate?: boolean },
): KernelSpec {
  const { chunks, length } = s;
  const bindings: Binding[] = [
    { name: "tmp", access: "read", length: chunks * length },
    { name: options.output, access: "read_write", length },
  ];
  const groups = linearWorkgroups(length, 256);
  return {
    name: options.name ?? "sumChunks",
    bindings,
    workgroups: groups,
    code: `${declareBindings(bindings)}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x + gid.y * ${groups[0] * 256}u;
  if (i >= ${length}u) { return; }
  var v = 0.0;
  for (var c = 0u; c < ${chunks}u; c++) { v += tmp[c * ${length}u + i]; }
${rw(options.accumulate, `${options.output}[i]`, "v")}
}
`,
  };
}

/** Reference of {@link columnSumKernels} (no accumulation) in float64. */
export function columnSumRef(
  input: ArrayLike<number>,
  s: { rows: number; cols: number },
): Float64Array {
  const out = new Float64Array(s.cols);
  for (let r = 0; r < s.rows; r++) {
    for (let c = 0; c < s.cols; c++) out[c] += input[r * s.cols + c];
  }
  return out;
}
