/**
 * Kernels that make training on the tfjs wasm backend fast: convolution gradients, batched
 * matrix products and a copy-free Identity here, the fused linear-attention core and GroupNorm in
 * `wasm_attention.ts` and `wasm_norm.ts`; {@link registerWasmKernels} installs them all.
 *
 * tfjs-backend-wasm 4.22 has no `Conv2DBackpropFilter` kernel, and its `Conv2DBackpropInput` is a
 * naive loop. Both are rebuilt here from the backend's own XNNPACK `Conv2D` kernel plus
 * `Transpose`, `Slice` and `Reshape`, so they are exact up to float32 summation order and
 * deterministic (same bits on rerun). Layout NHWC only, dilations 1 (as tfjs' conv2d gradient
 * requires).
 *
 * - Input gradient (any stride): the transposed convolution is split into its `sh * sw`
 *   sub-pixel phases. All phases are computed by one stride-1 `Conv2D` of `dy` with a filter of
 *   `ceil(kh / sh) x ceil(kw / sw)` taps and `sh * sw * Cin` output channels (the spatially
 *   reversed filter, in/out channels swapped, split by phase), then interleaved into space with a
 *   rank-4 `Transpose` and cropped. For stride 1 this is the textbook conv of `dy` with the
 *   reversed filter and padding `k - 1 - p`, with no interleave.
 * - Filter gradient: input channels become the batch. `Conv2D` of `x` transposed to
 *   `[Cin, H, W, B]` with `dy` transposed to `[oh, ow, B, Cout]` as the filter, dilated by the
 *   stride, gives `[Cin, kh', kw', Cout]`; it is cropped to `kh x kw` and transposed to
 *   `[kh, kw, Cin, Cout]`. A 1x1 stride-1 filter gradient is one XNNPACK product instead (the
 *   conv above is ~10x slower for it: XNNPACK packs a tall and wide right operand slowly).
 * - BatchMatMul: one XNNPACK product per batch element on views of the heap (the stock kernel
 *   runs every batched or transposed product through a scalar loop).
 * - Identity: shares the data (the stock kernel copies every tensor saved for the backward
 *   pass: 2,000 copies and a doubled memory peak per training step).
 * @module
 */
import { tf } from "../tf.ts";
import { registerFusedOps } from "../model/ops.ts";
import { tfjsInternalsUsable } from "./tfjs_internals.ts";
import { attentionKernels, hasFusedAttention, linearAttentionCore } from "./wasm_attention.ts";
import { groupNormCore, hasFusedGroupNorm, normKernels } from "./wasm_norm.ts";
import {
  dispose,
  gemm,
  heapF32,
  type Info,
  releaseView,
  view,
  type WasmBackend,
} from "./wasm_heap.ts";

type ExplicitPad = [[number, number], [number, number], [number, number], [number, number]];
type Pad = "valid" | "same" | number | ExplicitPad;
type RoundingMode = "floor" | "round" | "ceil" | undefined;

const BACKEND = "wasm";

/** Runs kernel `name` of the wasm backend on TensorInfos and returns its single output. */
function runKernel(
  name: string,
  backend: WasmBackend,
  inputs: tf.NamedTensorInfoMap,
  attrs: tf.NamedAttrMap,
): Info {
  const config = tf.getKernel(name, BACKEND);
  if (config === undefined) {
    throw new Error(
      `wasm kernel '${name}' is not registered: import @tensorflow/tfjs-backend-wasm first`,
    );
  }
  const out = config.kernelFunc({ inputs, backend, attrs });
  if (Array.isArray(out)) throw new Error(`wasm kernel '${name}' returned several outputs`);
  return out;
}

function input(inputs: tf.NamedTensorInfoMap, name: string, kernel: string): Info {
  const info = inputs[name];
  if (info === undefined) throw new Error(`${kernel}: missing input '${name}'`);
  return info;
}

function transpose(backend: WasmBackend, x: Info, perm: number[]): Info {
  return runKernel("Transpose", backend, { x }, { perm });
}

function reshape(backend: WasmBackend, x: Info, shape: number[]): Info {
  return runKernel("Reshape", backend, { x }, { shape });
}

function slice(backend: WasmBackend, x: Info, begin: number[], size: number[]): Info {
  return runKernel("Slice", backend, { x }, { begin, size });
}

/** A stride-1 XNNPACK conv2d with explicit (top, bottom, left, right) padding. */
function conv2d(
  backend: WasmBackend,
  x: Info,
  filter: Info,
  pads: { top: number; bottom: number; left: number; right: number; dilations: number[] },
): Info {
  const pad: ExplicitPad = [[0, 0], [pads.top, pads.bottom], [pads.left, pads.right], [0, 0]];
  return runKernel("Conv2D", backend, { x, filter }, {
    strides: [1, 1],
    pad,
    dataFormat: "NHWC",
    dilations: pads.dilations,
    dimRoundingMode: undefined,
  } as unknown as tf.NamedAttrMap);
}

function checkLayout(kernel: string, attrs: tf.NamedAttrMap): void {
  if (attrs.dataFormat !== undefined && attrs.dataFormat !== "NHWC") {
    throw new Error(
      `${kernel} on wasm supports dataFormat 'NHWC' only, got '${String(attrs.dataFormat)}'`,
    );
  }
  const d = attrs.dilations;
  if (d !== undefined && !(d === 1 || (Array.isArray(d) && d.every((v) => v === 1)))) {
    throw new Error(`${kernel} on wasm supports dilations 1 only, got ${JSON.stringify(d)}`);
  }
}

function convInfo(
  kernel: string,
  inShape: number[],
  filterShape: number[],
  attrs: tf.NamedAttrMap,
): tf.backend_util.Conv2DInfo {
  const strides = attrs.strides as number | [number, number];
  const square = filterShape[0] === filterShape[1] &&
    (typeof strides === "number" || strides[0] === strides[1]);
  if (typeof attrs.pad === "number" && !square) {
    // tfjs 4.22 computes the output size of a numeric pad from the filter height and stride
    // height only, so the shapes (and wasm's forward Conv2D buffer) are wrong.
    throw new Error(
      `${kernel}: a numeric pad needs a square filter and equal strides in tfjs 4.22 (got ` +
        `filter ${filterShape.slice(0, 2)}, strides ${strides}); use explicit padding`,
    );
  }
  return tf.backend_util.computeConv2DInfo(
    inShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    strides,
    1,
    attrs.pad as Pad,
    attrs.dimRoundingMode as RoundingMode,
    false,
    "channelsLast",
  );
}

/** One spatial axis of the input gradient: where the cropped conv reads `dy` and what it pads. */
interface AxisPlan {
  /** Filter taps of the phase-split filter, `ceil(k / s)`. */
  taps: number;
  /** First and one-past-last row of `dy` read. */
  dyStart: number;
  dyEnd: number;
  /** Zero padding before and after the rows read. */
  padBefore: number;
  padAfter: number;
  /** Conv output length (`q1 - q0`) and offset of the input's row 0 after interleaving. */
  outLength: number;
  offset: number;
}

/**
 * For `y[o] = sum_k x[o*s + k - p] w[k]` the gradient is `dx[i] = T[i + p]` with
 * `T[q*s + r] = sum_m dy[q - m] w[m*s + r]`; rows `q0..q1` of every phase `r` are one stride-1
 * conv of `dy` (zero outside `[0, oh)`) with the reversed phase filter.
 */
function planAxis(size: number, outSize: number, k: number, s: number, p: number): AxisPlan {
  const taps = Math.ceil(k / s);
  const q0 = Math.floor(p / s);
  const q1 = Math.ceil((p + size) / s);
  const first = q0 - (taps - 1);
  return {
    taps,
    dyStart: Math.max(0, first),
    dyEnd: Math.min(outSize, q1),
    padBefore: Math.max(0, -first),
    padAfter: Math.max(0, q1 - outSize),
    outLength: q1 - q0,
    offset: p - q0 * s,
  };
}

/** `[Kh, Kw, Cin, Cout]` into `[Mh, Mw, Cout, sh*sw*Cin]`: reversed, swapped, split by phase. */
function phaseFilter(
  w: Float32Array,
  shape: number[],
  sh: number,
  sw: number,
): { values: Float32Array; shape: number[] } {
  const [kh, kw, cin, cout] = shape;
  const mh = Math.ceil(kh / sh);
  const mw = Math.ceil(kw / sw);
  const outCh = sh * sw * cin;
  const values = new Float32Array(mh * mw * cout * outCh);
  for (let y = 0; y < kh; y++) {
    const ty = mh - 1 - Math.floor(y / sh);
    const ry = y % sh;
    for (let x = 0; x < kw; x++) {
      const tx = mw - 1 - Math.floor(x / sw);
      const rx = x % sw;
      const src = (y * kw + x) * cin * cout;
      const dstTap = (ty * mw + tx) * cout * outCh + (ry * sw + rx) * cin;
      for (let c = 0; c < cin; c++) {
        const srcC = src + c * cout;
        const dstC = dstTap + c;
        for (let o = 0; o < cout; o++) values[dstC + o * outCh] = w[srcC + o];
      }
    }
  }
  return { values, shape: [mh, mw, cout, outCh] };
}

function conv2DBackpropInput(
  inputs: tf.NamedTensorInfoMap,
  backend: WasmBackend,
  attrs: tf.NamedAttrMap,
): Info {
  checkLayout("Conv2DBackpropInput", attrs);
  const dy = input(inputs, "dy", "Conv2DBackpropInput");
  const filter = input(inputs, "filter", "Conv2DBackpropInput");
  const inputShape = attrs.inputShape as number[];
  const info = convInfo("Conv2DBackpropInput", inputShape, filter.shape, attrs);
  const [batch, height, width, cin] = inputShape;
  const { strideHeight: sh, strideWidth: sw, outHeight, outWidth } = info;
  if (dy.shape[1] !== outHeight || dy.shape[2] !== outWidth) {
    throw new Error(
      `Conv2DBackpropInput: dy shape ${dy.shape} does not match output ${outHeight}x${outWidth}`,
    );
  }
  const rows = planAxis(height, outHeight, info.filterHeight, sh, info.padInfo.top);
  const cols = planAxis(width, outWidth, info.filterWidth, sw, info.padInfo.left);

  const w = backend.typedArrayFromHeap(filter) as Float32Array;
  const pf = phaseFilter(w, filter.shape, sh, sw);
  const phased = backend.makeOutput(pf.shape, "float32", undefined, pf.values);

  const cropped = rows.dyStart > 0 || rows.dyEnd < outHeight || cols.dyStart > 0 ||
    cols.dyEnd < outWidth;
  const dyIn = cropped
    ? slice(backend, dy, [0, rows.dyStart, cols.dyStart, 0], [
      batch,
      rows.dyEnd - rows.dyStart,
      cols.dyEnd - cols.dyStart,
      dy.shape[3],
    ])
    : dy;
  const z = conv2d(backend, dyIn, phased, {
    top: rows.padBefore,
    bottom: rows.padAfter,
    left: cols.padBefore,
    right: cols.padAfter,
    dilations: [1, 1],
  });
  dispose(backend, phased);
  if (cropped) dispose(backend, dyIn);

  // z: [B, Qh, Qw, (rh, rw, c)] -> [B, Qh*sh, Qw*sw, C].
  const fullH = rows.outLength * sh;
  const fullW = cols.outLength * sw;
  let full: Info;
  if (sh === 1) {
    full = reshape(backend, z, [batch, fullH, fullW, cin]);
  } else {
    const z4 = reshape(backend, z, [batch * rows.outLength, cols.outLength, sh, sw * cin]);
    const t = transpose(backend, z4, [0, 2, 1, 3]);
    full = reshape(backend, t, [batch, fullH, fullW, cin]);
    dispose(backend, z4, t);
  }
  dispose(backend, z);
  if (rows.offset === 0 && cols.offset === 0 && fullH === height && fullW === width) return full;
  const dx = slice(backend, full, [0, rows.offset, cols.offset, 0], [batch, height, width, cin]);
  dispose(backend, full);
  return dx;
}

function conv2DBackpropFilter(
  inputs: tf.NamedTensorInfoMap,
  backend: WasmBackend,
  attrs: tf.NamedAttrMap,
): Info {
  checkLayout("Conv2DBackpropFilter", attrs);
  const x = input(inputs, "x", "Conv2DBackpropFilter");
  const dy = input(inputs, "dy", "Conv2DBackpropFilter");
  const filterShape = attrs.filterShape as number[];
  const info = convInfo("Conv2DBackpropFilter", x.shape, filterShape, attrs);
  const [kh, kw, cin, cout] = filterShape;
  const { strideHeight: sh, strideWidth: sw, outHeight, outWidth, inHeight, inWidth } = info;
  if (dy.shape[1] !== outHeight || dy.shape[2] !== outWidth) {
    throw new Error(
      `Conv2DBackpropFilter: dy shape ${dy.shape} does not match output ${outHeight}x${outWidth}`,
    );
  }
  const { top, left } = info.padInfo;
  if (
    kh === 1 && kw === 1 && sh === 1 && sw === 1 && outHeight === inHeight && outWidth === inWidth
  ) {
    return pointwiseFilterGrad(backend, x, dy);
  }
  const spanH = (outHeight - 1) * sh + 1;
  const spanW = (outWidth - 1) * sw + 1;
  const bottom = Math.max(0, kh - 1 + spanH - inHeight - top);
  const right = Math.max(0, kw - 1 + spanW - inWidth - left);

  const xT = transpose(backend, x, [3, 1, 2, 0]); // [Cin, H, W, B]
  const dyT = transpose(backend, dy, [1, 2, 0, 3]); // [oh, ow, B, Cout]
  const g = conv2d(backend, xT, dyT, { top, bottom, left, right, dilations: [sh, sw] });
  dispose(backend, xT, dyT);
  let gk = g; // [Cin, kh', kw', Cout]
  if (g.shape[1] !== kh || g.shape[2] !== kw) {
    gk = slice(backend, g, [0, 0, 0, 0], [cin, kh, kw, cout]);
    dispose(backend, g);
  }
  const dw = transpose(backend, gk, [1, 2, 0, 3]);
  dispose(backend, gk);
  return dw;
}

/**
 * The filter gradient of a 1x1, stride-1 convolution: dW [Cin, Cout] = xᵀ · dy over all
 * P = B·H·W pixels, as one XNNPACK product. XNNPACK packs its right operand, which is slow
 * for a tall and wide one, so the narrower of x and dy is the right operand and the other is
 * transposed: dW = xᵀ · dy when Cout <= Cin, else dW = (dyᵀ · x)ᵀ.
 */
function pointwiseFilterGrad(backend: WasmBackend, x: Info, dy: Info): Info {
  const cin = x.shape[3];
  const cout = dy.shape[3];
  const p = x.shape[0] * x.shape[1] * x.shape[2];
  if (cout <= cin) {
    const xT = transpose2d(backend, x, p, cin); // [Cin, P]
    const dw = backend.makeOutput([1, 1, cin, cout], "float32");
    gemm(backend, { a: xT, b: dy, out: dw }, { m: cin, k: p, n: cout });
    dispose(backend, xT);
    return dw;
  }
  const dyT = transpose2d(backend, dy, p, cout); // [Cout, P]
  const dwT = backend.makeOutput([cout, cin], "float32");
  gemm(backend, { a: dyT, b: x, out: dwT }, { m: cout, k: p, n: cin });
  dispose(backend, dyT);
  const dw = transpose2d(backend, dwT, cout, cin);
  dispose(backend, dwT);
  return { ...dw, shape: [1, 1, cin, cout] };
}

/**
 * `x` read as a row-major [rows, cols] matrix, transposed into a new [cols, rows] tensor with
 * a blocked copy on the heap (about twice as fast as the wasm Transpose kernel on large ones).
 */
function transpose2d(backend: WasmBackend, x: Info, rows: number, cols: number): Info {
  const out = backend.makeOutput([cols, rows], "float32");
  const src = heapF32(backend, x);
  const dst = heapF32(backend, out);
  const block = 8;
  for (let r0 = 0; r0 < rows; r0 += block) {
    const r1 = Math.min(rows, r0 + block);
    for (let c0 = 0; c0 < cols; c0 += block) {
      const c1 = Math.min(cols, c0 + block);
      for (let r = r0; r < r1; r++) {
        let s = r * cols + c0;
        let d = c0 * rows + r;
        for (let c = c0; c < c1; c++) {
          dst[d] = src[s];
          s++;
          d += rows;
        }
      }
    }
  }
  return out;
}

const backpropInputConfig: tf.KernelConfig = {
  kernelName: "Conv2DBackpropInput",
  backendName: BACKEND,
  kernelFunc: ({ inputs, backend, attrs }) =>
    conv2DBackpropInput(inputs, backend as unknown as WasmBackend, attrs ?? {}),
};

const backpropFilterConfig: tf.KernelConfig = {
  kernelName: "Conv2DBackpropFilter",
  backendName: BACKEND,
  kernelFunc: ({ inputs, backend, attrs }) =>
    conv2DBackpropFilter(inputs, backend as unknown as WasmBackend, attrs ?? {}),
};

/**
 * BatchMatMul on XNNPACK: the wasm kernel uses XNNPACK only for one [M, K] x [K, N] product
 * without transposes and runs every batched or transposed product through a scalar loop (about
 * 2 GFLOP/s; the attention products of the U-Net took 40% of a forward pass). Here transposes
 * are materialised with `Transpose`, a product whose right side is shared is done as one
 * [batch * M, K] x [K, N] product, and other batches as one XNNPACK product per batch element
 * on views of the operands and of the output (no copies).
 */
function batchMatMul(
  inputs: tf.NamedTensorInfoMap,
  backend: WasmBackend,
  attrs: tf.NamedAttrMap,
  original: tf.KernelConfig,
): Info {
  const a = input(inputs, "a", "BatchMatMul");
  const b = input(inputs, "b", "BatchMatMul");
  const transposeA = attrs.transposeA === true;
  const transposeB = attrs.transposeB === true;
  const size = (dims: number[]) => dims.reduce((x, y) => x * y, 1);
  const batchA = size(a.shape.slice(0, -2));
  const batchB = size(b.shape.slice(0, -2));
  if (batchA !== batchB && batchA !== 1 && batchB !== 1) {
    // Broadcasting over several outer dims: leave it to the reference kernel.
    const out = original.kernelFunc({
      inputs,
      backend: backend as unknown as tf.KernelBackend,
      attrs,
    });
    if (Array.isArray(out)) throw new Error("BatchMatMul returned several outputs");
    return out;
  }
  const rank = (x: Info) => x.shape.length;
  const as3 = (x: Info, batch: number, transposed: boolean): Info => {
    const r = x.shape[rank(x) - 2];
    const c = x.shape[rank(x) - 1];
    const x3 = reshape(backend, x, [batch, r, c]);
    if (!transposed) return x3;
    const t = transpose(backend, x3, [0, 2, 1]);
    dispose(backend, x3);
    return t;
  };
  const a3 = as3(a, batchA, transposeA); // [batchA, M, K]
  const b3 = as3(b, batchB, transposeB); // [batchB, K, N]
  const [, m, k] = a3.shape;
  const n = b3.shape[2];
  const batch = Math.max(batchA, batchB);
  const outerShape = (batchA >= batchB ? a : b).shape.slice(0, -2);
  const out = backend.makeOutput([batch, m, n], "float32");
  if (batchB === 1) {
    gemm(backend, { a: a3, b: b3, out }, { m: batchA * m, k, n });
  } else {
    for (let i = 0; i < batch; i++) {
      const ai = view(backend, a3, batchA === 1 ? 0 : i * m * k, [m, k]);
      const bi = view(backend, b3, i * k * n, [k, n]);
      const oi = view(backend, out, i * m * n, [m, n]);
      gemm(backend, { a: ai, b: bi, out: oi }, { m, k, n });
      releaseView(backend, ai, bi, oi);
    }
  }
  dispose(backend, a3, b3);
  return { ...out, shape: [...outerShape, m, n] };
}

/** Identity shares the data (as the cpu backend does) instead of copying it. */
function identity(inputs: tf.NamedTensorInfoMap, backend: WasmBackend): Info {
  const x = input(inputs, "x", "Identity");
  backend.incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}

const identityConfig: tf.KernelConfig = {
  kernelName: "Identity",
  backendName: BACKEND,
  kernelFunc: ({ inputs, backend }) => identity(inputs, backend as unknown as WasmBackend),
};

let batchMatMulConfig: tf.KernelConfig | undefined;

/** The BatchMatMul override, wrapping (and keeping the setup of) the backend's own kernel. */
function batchMatMulOverride(): tf.KernelConfig | undefined {
  if (batchMatMulConfig) return batchMatMulConfig;
  const original = tf.getKernel("BatchMatMul", BACKEND);
  if (original === undefined) return undefined;
  batchMatMulConfig = {
    kernelName: "BatchMatMul",
    backendName: BACKEND,
    setupFunc: original.setupFunc,
    disposeFunc: original.disposeFunc,
    kernelFunc: ({ inputs, backend, attrs }) =>
      batchMatMul(inputs, backend as unknown as WasmBackend, attrs ?? {}, original),
  };
  return batchMatMulConfig;
}

function install(config: tf.KernelConfig): void {
  const current = tf.getKernel(config.kernelName, config.backendName);
  if (current?.kernelFunc === config.kernelFunc) return;
  if (current !== undefined) tf.unregisterKernel(config.kernelName, config.backendName);
  tf.registerKernel(config);
}

/**
 * Registers `Conv2DBackpropFilter` and replaces `Conv2DBackpropInput`, `BatchMatMul` and
 * `Identity` for the `wasm` backend, and registers the fused attention and GroupNorm kernels
 * as the model's fused ops (`src/model/ops.ts`). Nothing is registered when the installed tfjs
 * is not the one whose internals these kernels use (see ./tfjs_internals.ts). Idempotent; the kernels look up the wasm backend's
 * own kernels when they run, so `@tensorflow/tfjs-backend-wasm` must be imported by then.
 */
export function registerWasmKernels(): void {
  if (!tfjsInternalsUsable()) return; // stock kernels (warned once)
  install(backpropFilterConfig);
  install(backpropInputConfig);
  install(identityConfig);
  for (const config of [...attentionKernels, ...normKernels]) install(config);
  const matmul = batchMatMulOverride();
  if (matmul) install(matmul);
  registerFusedOps({
    groupNorm: (x, affine, options) =>
      hasFusedGroupNorm() ? groupNormCore(x, affine, options) : undefined,
    linearAttention: (x, w, options) =>
      hasFusedAttention() ? linearAttentionCore(x, w, options) : undefined,
  });
}
