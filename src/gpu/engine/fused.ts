/**
 * Engine-side fusions of the conv and linear parameter gradients: the weight gradient and the
 * bias gradient in one GEMM, on ../kernels/matmul.ts's tiled `gemmKernel`. The bias gradient
 * Σ_pixels dy is the weight gradient's product with one more row of A that is all ones, so
 * `dW` [M, cout] and `db` [cout] come out of one [M + 1, cout] product (M = k·k·cin, or cin for
 * a linear layer), in one dispatch (or one split pass and one reduce) instead of two (or
 * four). The weight and the bias are neighbours in the flat gradient buffer (./layout.ts: the
 * bias at the weight's offset plus its aligned size), so one binding `dwb` covers both; the
 * padding between them is never written.
 *
 * References: ../kernels/conv.ts `convWeightGradRef` and `convBiasGradRef`, ../kernels/matmul.ts
 * `linearWeightGradRef` and `linearBiasGradRef` (the products are the same sums; the pixel
 * order of the bias sum is the GEMM's).
 * @module
 */
import type { Binding, KernelSpec } from "../kernel.ts";
import { declareBindings, linearWorkgroups } from "../kernel.ts";
import { type ConvShape, convWeightGradChunks } from "../kernels/conv.ts";
import { chooseTile, gemmKernel, type LinearShape } from "../kernels/matmul.ts";
import { alignFloats } from "./layout.ts";

/** Length of the `dwb` binding of a weight of `size` floats and a bias of `cout`. */
export function weightBiasLength(size: number, cout: number): number {
  return alignFloats(size) + cout;
}

/** The WGSL index in `dwb` of product element (row, col): the bias row after the padding. */
function dwbIndex(m: number, cout: number, row: string, col: string): string {
  const padded = alignFloats(m * cout);
  return `select(${row} * ${cout}u + ${col}, ${padded}u + ${col}, ${row} == ${m}u)`;
}

/** The reduce of the split products: `dwb` from the chunks' partial sums, chunks in order. */
function reduceKernel(name: string, m: number, cout: number, chunks: number): KernelSpec {
  const length = (m + 1) * cout;
  const bindings: Binding[] = [
    { name: "tmp", access: "read", length: chunks * length },
    { name: "dwb", access: "read_write", length: weightBiasLength(m * cout, cout) },
  ];
  const groups = linearWorkgroups(length, 256);
  return {
    name,
    bindings,
    workgroups: groups,
    code: `${declareBindings(bindings)}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x + gid.y * ${groups[0] * 256}u;
  if (i >= ${length}u) { return; }
  var v = 0.0;
  for (var c = 0u; c < ${chunks}u; c++) { v += tmp[c * ${length}u + i]; }
  dwb[${dwbIndex(m, cout, `(i / ${cout}u)`, `(i % ${cout}u)`)}] = v;
}
`,
  };
}

/**
 * The weight and bias gradients of a conv with bias: bindings `x` [pixels·cin] read, `dy`
 * [pixels·cout] read, `dwb` [{@link weightBiasLength}] read_write (dw at 0, db after the
 * weight's aligned size), overwritten. Split over pixel chunks like ../kernels/conv.ts
 * `convWeightGrad` (same default chunks): then two passes through `tmp`.
 */
export function convWeightBiasGrad(s: ConvShape): KernelSpec | KernelSpec[] {
  const pixels = s.batch * s.height * s.width;
  const m = s.k * s.k * s.cin;
  const tile = chooseTile(m + 1, s.cout);
  const wanted = convWeightGradChunks(s, tile);
  const kChunk = Math.ceil(Math.ceil(pixels / wanted) / tile.bk) * tile.bk;
  const chunks = Math.ceil(pixels / kChunk);
  const single = chunks === 1;
  const name = `conv${s.k}x${s.k}.weightBiasGrad`;
  const out: Binding = single
    ? { name: "dwb", access: "read_write", length: weightBiasLength(m * s.cout, s.cout) }
    : { name: "tmp", access: "read_write", length: chunks * (m + 1) * s.cout };
  const pad = s.k >> 1;
  const loadX = s.k === 1 ? "  return x[col * CIN + row];" : `  let ci = row % CIN;
  let tap = row / CIN;
  let sy = i32(tap / KS) - ${pad};
  let sx = i32(tap % KS) - ${pad};
  let oy = i32((col / IW) % IH) + sy;
  let ox = i32(col % IW) + sx;
  if (oy < 0 || oy >= i32(IH) || ox < 0 || ox >= i32(IW)) { return 0.0; }
  return x[u32(i32(col) + sy * i32(IW) + sx) * CIN + ci];`;
  const gemm = gemmKernel({
    name: single ? name : `${name}.partial`,
    m: m + 1,
    n: s.cout,
    k: pixels,
    slices: chunks,
    kChunk: single ? undefined : kChunk,
    bindings: [
      { name: "x", access: "read", length: pixels * s.cin },
      { name: "dy", access: "read", length: pixels * s.cout },
      out,
    ],
    prelude: `const IH = ${s.height}u;
const IW = ${s.width}u;
const CIN = ${s.cin}u;
const COUT = ${s.cout}u;
const KS = ${s.k}u;
const MW = ${m}u;`,
    loadA: `  if (row == MW) { return 1.0; }
${loadX}`,
    aContiguous: "m",
    loadB: "  return dy[row * COUT + col];",
    bContiguous: "n",
    store: single
      ? `  dwb[${dwbIndex(m, s.cout, "row", "col")}] = v;`
      : `  tmp[z * ${(m + 1) * s.cout}u + row * COUT + col] = v;`,
    tile,
  });
  return single ? gemm : [gemm, reduceKernel(`${name}.reduce`, m, s.cout, chunks)];
}

/**
 * The weight and bias gradients of a linear layer: bindings `x` [rows·cin] read, `dy`
 * [rows·cout] read, `dwb` [{@link weightBiasLength}] read_write (dw at 0, db after the
 * weight's aligned size), overwritten. One dispatch.
 */
export function linearWeightBiasGrad(s: LinearShape): KernelSpec {
  return gemmKernel({
    name: "linear.weightBiasGrad",
    m: s.cin + 1,
    n: s.cout,
    k: s.rows,
    slices: 1,
    bindings: [
      { name: "x", access: "read", length: s.rows * s.cin },
      { name: "dy", access: "read", length: s.rows * s.cout },
      { name: "dwb", access: "read_write", length: weightBiasLength(s.cin * s.cout, s.cout) },
    ],
    prelude: `const CIN = ${s.cin}u;
const COUT = ${s.cout}u;`,
    loadA: `  if (row == CIN) { return 1.0; }
  return x[col * CIN + row];`,
    aContiguous: "m",
    loadB: "  return dy[row * COUT + col];",
    bContiguous: "n",
    store: `  dwb[${dwbIndex(s.cin, s.cout, "row", "col")}] = v;`,
  });
}
