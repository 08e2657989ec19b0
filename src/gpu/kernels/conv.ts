/**
 * 2-D convolution, stride 1, 'same' zero padding (pad = k >> 1), k in {1, 3}: NHWC
 * activations [batch, height, width, c], HWIO weights [k, k, cin, cout].
 *
 * Tiling: every kernel is an implicit GEMM on the shared tiled generator of ./matmul.ts
 * (`gemmKernel`: 64x64 or 32x32 output tiles, 4x4 / 2x2 outputs per thread, K staged through
 * workgroup memory in 16-wide slabs, zero-filled past every edge so no size needs to be a
 * tile multiple). The im2col matrix is never built: the A loader maps (row, col) to a pixel
 * and a tap/channel and reads NHWC directly (zero outside the image), the thread-to-element
 * mapping walking whichever index is contiguous (channels), so loads are coalesced.
 * - forward: M = batch*height*width pixels, N = cout, K = k*k*cin; A = shifted x, B = w as
 *   [k*k*cin, cout] (HWIO is already that matrix).
 * - input gradient: M = pixels, N = cin, K = k*k*cout; A = dy shifted the mirrored way,
 *   B[(tap, co), ci] = w[tap, ci, co] (read along co).
 * - weight gradient: M = k*k*cin, N = cout, K = pixels, split into chunks on workgroups.z
 *   when the output alone gives few workgroups; partial sums go to `tmp` [chunks*k*k*cin*cout]
 *   and a second pass adds them in chunk order (./matmul.ts `sumChunksKernel`).
 * - bias gradient: the column sum of dy [pixels, cout] (./matmul.ts `columnSumKernels`).
 * Every output is a fixed-order sum, so the same inputs give the same bytes.
 * @module
 */
import type { Binding, KernelSpec } from "../kernel.ts";
import {
  chooseTile,
  columnSumKernels,
  columnSumRef,
  gemmKernel,
  type GemmTile,
  sumChunksKernel,
} from "./matmul.ts";

/** Shape of a stride-1 'same' convolution. */
export interface ConvShape {
  /** Images. */
  batch: number;
  /** Image rows. */
  height: number;
  /** Image columns. */
  width: number;
  /** Input channels. */
  cin: number;
  /** Output channels. */
  cout: number;
  /** Kernel size (pad = k >> 1). */
  k: 1 | 3;
}

function checkShape(s: ConvShape): void {
  const dims = [s.batch, s.height, s.width, s.cin, s.cout];
  if (!dims.every((d) => Number.isInteger(d) && d > 0) || (s.k !== 1 && s.k !== 3)) {
    throw new RangeError(`conv: unsupported shape ${JSON.stringify(s)}`);
  }
}

function pixels(s: ConvShape): number {
  return s.batch * s.height * s.width;
}

function prelude(s: ConvShape): string {
  return `const IH = ${s.height}u;
const IW = ${s.width}u;
const CIN = ${s.cin}u;
const COUT = ${s.cout}u;
const KS = ${s.k}u;
const PAD = ${s.k >> 1};`;
}

/**
 * WGSL that reads `array` [pixels, channels] at pixel `pixel` shifted by (sy, sx) rows and
 * columns, channel `channel`, zero outside the image.
 */
function shifted(array: string, channels: string, pixel: string, channel: string): string {
  return `  let oy = i32((${pixel} / IW) % IH) + sy;
  let ox = i32(${pixel} % IW) + sx;
  if (oy < 0 || oy >= i32(IH) || ox < 0 || ox >= i32(IW)) { return 0.0; }
  return ${array}[u32(i32(${pixel}) + sy * i32(IW) + sx) * ${channels} + ${channel}];`;
}

function rw(accumulate: boolean | undefined, target: string, value: string): string {
  return `  ${target} = ${accumulate ? `${value} + ${target}` : value};`;
}

/**
 * `y = conv(x, w) (+ b)`. Bindings: `x` [batch*height*width*cin] read, `w` [k*k*cin*cout]
 * read, `b` [cout] read (only with `bias`), `y` [batch*height*width*cout] read_write
 * (overwritten). Limit: ceil(pixels / 64) <= 65535 workgroups (4M pixels).
 */
export function convForward(
  s: ConvShape,
  options: { bias: boolean; tile?: GemmTile },
): KernelSpec {
  checkShape(s);
  const p = pixels(s);
  const bindings: Binding[] = [
    { name: "x", access: "read", length: p * s.cin },
    { name: "w", access: "read", length: s.k * s.k * s.cin * s.cout },
    ...(options.bias ? [{ name: "b", access: "read" as const, length: s.cout }] : []),
    { name: "y", access: "read_write", length: p * s.cout },
  ];
  return gemmKernel({
    name: `conv${s.k}x${s.k}.forward`,
    m: p,
    n: s.cout,
    k: s.k * s.k * s.cin,
    slices: 1,
    bindings,
    prelude: prelude(s),
    loadA: s.k === 1 ? "  return x[row * CIN + col];" : `  let ci = col % CIN;
  let tap = col / CIN;
  let sy = i32(tap / KS) - PAD;
  let sx = i32(tap % KS) - PAD;
${shifted("x", "CIN", "row", "ci")}`,
    aContiguous: "k",
    loadB: "  return w[row * COUT + col];",
    bContiguous: "n",
    store: `  y[row * COUT + col] = ${options.bias ? "v + b[col]" : "v"};`,
    tile: options.tile,
  });
}

/** Reference of {@link convForward} in float64 (`b` undefined: no bias). */
export function convForwardRef(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  b: ArrayLike<number> | undefined,
  s: ConvShape,
): Float64Array {
  const { batch, height, width, cin, cout, k } = s;
  const pad = k >> 1;
  const y = new Float64Array(pixels(s) * cout);
  for (let n = 0; n < batch; n++) {
    for (let oy = 0; oy < height; oy++) {
      for (let ox = 0; ox < width; ox++) {
        const out = ((n * height + oy) * width + ox) * cout;
        for (let co = 0; co < cout; co++) y[out + co] = b === undefined ? 0 : b[co];
        for (let ky = 0; ky < k; ky++) {
          const iy = oy + ky - pad;
          if (iy < 0 || iy >= height) continue;
          for (let kx = 0; kx < k; kx++) {
            const ix = ox + kx - pad;
            if (ix < 0 || ix >= width) continue;
            const inp = ((n * height + iy) * width + ix) * cin;
            for (let ci = 0; ci < cin; ci++) {
              const xv = x[inp + ci];
              const wo = ((ky * k + kx) * cin + ci) * cout;
              for (let co = 0; co < cout; co++) y[out + co] += xv * w[wo + co];
            }
          }
        }
      }
    }
  }
  return y;
}

/** Options of the gradient builders. */
export interface ConvGradOptions {
  /** Add to the gradient binding instead of overwriting it. */
  accumulate?: boolean;
  /** Tiling (default ./matmul.ts `chooseTile`). */
  tile?: GemmTile;
}

/**
 * `dx = conv^T(dy, w)`: the gradient of {@link convForward} with respect to x. Bindings: `dy`
 * [pixels*cout] read, `w` [k*k*cin*cout] read, `dx` [pixels*cin] read_write.
 */
export function convInputGrad(s: ConvShape, options: ConvGradOptions = {}): KernelSpec {
  checkShape(s);
  const p = pixels(s);
  return gemmKernel({
    name: `conv${s.k}x${s.k}.inputGrad`,
    m: p,
    n: s.cin,
    k: s.k * s.k * s.cout,
    slices: 1,
    bindings: [
      { name: "dy", access: "read", length: p * s.cout },
      { name: "w", access: "read", length: s.k * s.k * s.cin * s.cout },
      { name: "dx", access: "read_write", length: p * s.cin },
    ],
    prelude: prelude(s),
    loadA: s.k === 1 ? "  return dy[row * COUT + col];" : `  let co = col % COUT;
  let tap = col / COUT;
  let sy = PAD - i32(tap / KS);
  let sx = PAD - i32(tap % KS);
${shifted("dy", "COUT", "row", "co")}`,
    aContiguous: "k",
    loadB: s.k === 1
      ? "  return w[col * COUT + row];"
      : "  return w[((row / COUT) * CIN + col) * COUT + row % COUT];",
    bContiguous: "k",
    store: rw(options.accumulate, "dx[row * CIN + col]", "v"),
    tile: options.tile,
  });
}

/** Reference of {@link convInputGrad} (no accumulation) in float64. */
export function convInputGradRef(
  dy: ArrayLike<number>,
  w: ArrayLike<number>,
  s: ConvShape,
): Float64Array {
  const { batch, height, width, cin, cout, k } = s;
  const pad = k >> 1;
  const dx = new Float64Array(pixels(s) * cin);
  for (let n = 0; n < batch; n++) {
    for (let oy = 0; oy < height; oy++) {
      for (let ox = 0; ox < width; ox++) {
        const out = ((n * height + oy) * width + ox) * cout;
        for (let ky = 0; ky < k; ky++) {
          const iy = oy + ky - pad;
          if (iy < 0 || iy >= height) continue;
          for (let kx = 0; kx < k; kx++) {
            const ix = ox + kx - pad;
            if (ix < 0 || ix >= width) continue;
            const inp = ((n * height + iy) * width + ix) * cin;
            for (let ci = 0; ci < cin; ci++) {
              const wo = ((ky * k + kx) * cin + ci) * cout;
              let sum = 0;
              for (let co = 0; co < cout; co++) sum += dy[out + co] * w[wo + co];
              dx[inp + ci] += sum;
            }
          }
        }
      }
    }
  }
  return dx;
}

/** Workgroups the split weight gradient aims at, and the fewest pixels per chunk. */
const TARGET_WORKGROUPS = 512;
const MIN_CHUNK = 512;

/**
 * The K (pixel) chunks {@link convWeightGrad} splits into by default: enough for about 512
 * workgroups with the tile it uses, each chunk at least 512 pixels.
 */
export function convWeightGradChunks(s: ConvShape, tile?: GemmTile): number {
  const m = s.k * s.k * s.cin;
  const t = tile ?? chooseTile(m, s.cout);
  const tiles = Math.ceil(m / t.bm) * Math.ceil(s.cout / t.bn);
  const byWork = Math.floor(TARGET_WORKGROUPS / tiles);
  const byLength = Math.floor(pixels(s) / MIN_CHUNK);
  return Math.max(1, Math.min(byWork, byLength));
}

/**
 * `dw = sum over pixels of x-patch (outer) dy`: the gradient of {@link convForward} with respect
 * to w. Bindings: `x` [pixels*cin] read, `dy` [pixels*cout] read, `dw` [k*k*cin*cout]
 * read_write. With one chunk (`options.chunks`, default {@link convWeightGradChunks}) a single
 * kernel; with more, two passes: the first writes `tmp` [chunks*k*k*cin*cout] (scratch,
 * read_write) with each chunk's partial sums, the second reads `tmp` and writes `dw`.
 */
export function convWeightGrad(
  s: ConvShape,
  options: ConvGradOptions & { chunks?: number } = {},
): KernelSpec | KernelSpec[] {
  checkShape(s);
  const p = pixels(s);
  const m = s.k * s.k * s.cin;
  const size = m * s.cout;
  const tile = options.tile ?? chooseTile(m, s.cout);
  const wanted = Math.max(1, Math.floor(options.chunks ?? convWeightGradChunks(s, tile)));
  const kChunk = Math.ceil(Math.ceil(p / wanted) / tile.bk) * tile.bk;
  const chunks = Math.ceil(p / kChunk);
  const single = chunks === 1;
  const out: Binding = single
    ? { name: "dw", access: "read_write", length: size }
    : { name: "tmp", access: "read_write", length: chunks * size };
  const name = `conv${s.k}x${s.k}.weightGrad`;
  const gemm = gemmKernel({
    name: single ? name : `${name}.partial`,
    m,
    n: s.cout,
    k: p,
    slices: chunks,
    kChunk: single ? undefined : kChunk,
    bindings: [
      { name: "x", access: "read", length: p * s.cin },
      { name: "dy", access: "read", length: p * s.cout },
      out,
    ],
    prelude: prelude(s),
    loadA: s.k === 1 ? "  return x[col * CIN + row];" : `  let ci = row % CIN;
  let tap = row / CIN;
  let sy = i32(tap / KS) - PAD;
  let sx = i32(tap % KS) - PAD;
${shifted("x", "CIN", "col", "ci")}`,
    aContiguous: "m",
    loadB: "  return dy[row * COUT + col];",
    bContiguous: "n",
    store: single
      ? rw(options.accumulate, "dw[row * COUT + col]", "v")
      : `  tmp[z * ${size}u + row * COUT + col] = v;`,
    tile,
  });
  if (single) return gemm;
  return [
    gemm,
    sumChunksKernel({ chunks, length: size }, {
      name: `${name}.reduce`,
      output: "dw",
      accumulate: options.accumulate,
    }),
  ];
}

/** Reference of {@link convWeightGrad} (no accumulation) in float64. */
export function convWeightGradRef(
  x: ArrayLike<number>,
  dy: ArrayLike<number>,
  s: ConvShape,
): Float64Array {
  const { batch, height, width, cin, cout, k } = s;
  const pad = k >> 1;
  const dw = new Float64Array(k * k * cin * cout);
  for (let n = 0; n < batch; n++) {
    for (let oy = 0; oy < height; oy++) {
      for (let ox = 0; ox < width; ox++) {
        const out = ((n * height + oy) * width + ox) * cout;
        for (let ky = 0; ky < k; ky++) {
          const iy = oy + ky - pad;
          if (iy < 0 || iy >= height) continue;
          for (let kx = 0; kx < k; kx++) {
            const ix = ox + kx - pad;
            if (ix < 0 || ix >= width) continue;
            const inp = ((n * height + iy) * width + ix) * cin;
            for (let ci = 0; ci < cin; ci++) {
              const xv = x[inp + ci];
              const wo = ((ky * k + kx) * cin + ci) * cout;
              for (let co = 0; co < cout; co++) dw[wo + co] += xv * dy[out + co];
            }
          }
        }
      }
    }
  }
  return dw;
}

/**
 * `db = sum over pixels of dy`. Bindings: `dy` [pixels*cout] read, `db` [cout] read_write;
 * from 2048 pixels (or with `chunks` > 1) two passes through `tmp` [chunks*cout] (chunks =
 * ./matmul.ts `columnSumChunks(pixels)` by default: floor(pixels / 1024), at most 128).
 */
export function convBiasGrad(
  s: ConvShape,
  options: { accumulate?: boolean; chunks?: number } = {},
): KernelSpec | KernelSpec[] {
  checkShape(s);
  return columnSumKernels({ rows: pixels(s), cols: s.cout }, {
    name: `conv${s.k}x${s.k}.biasGrad`,
    accumulate: options.accumulate,
    chunks: options.chunks,
  });
}

/** Reference of {@link convBiasGrad} (no accumulation) in float64. */
export function convBiasGradRef(dy: ArrayLike<number>, s: ConvShape): Float64Array {
  return columnSumRef(dy, { rows: pixels(s), cols: s.cout });
}
