/**
 * The core of the U-Net's linear attention as one fused op for the wasm backend, forward and
 * backward: from the normalised input x [B, H, W, C] and the `to_qkv` weight [1, 1, C, 3·hd]
 * (hd = heads · dimHead, channel blocks q | k | v, head-major inside each) to the merged heads
 * [B, H, W, hd] that `to_out` reads:
 *
 *   q, k, v = x · W;  P = softmax over each head's channels of q;  K̃ = softmax over positions
 *   of k;  ctx = K̃ᵀ v;  out = P · (ctx · dimHead^-1/2)      (per example and head)
 *
 * which is the reference `LinearAttention` up to where the scale is applied (float32 rounding).
 * The composed version costs 5 transposes of the hd-channel activations, 3 pointwise
 * convolutions and their gradients, and ~40 saved tensors; here everything is laid out head-major
 * so that every product is one XNNPACK call on views of the wasm heap, softmaxes are XNNPACK's,
 * and the backward pass is written by hand (saved: x, W, P, K̃ᵀ, v and ctx).
 *
 * {@link linearAttentionCore} uses it on wasm once {@link attentionKernels} are registered (by
 * `registerWasmKernels`) and the composed ops elsewhere.
 * @module
 */
import { tf } from "../tf.ts";
import {
  dispose,
  fusedKernelPair,
  gemm,
  heapOffset,
  type Info,
  releaseView,
  view,
  type WasmBackend,
  wasmKernelActive,
  wholeHeapF32,
} from "./wasm_heap.ts";

const BACKEND = "wasm";
const FORWARD = "DdpmLinearAttention";
const BACKWARD = "DdpmLinearAttentionGrad";

/** Options of the attention core. */
export interface AttentionCoreOptions {
  /** Number of heads. */
  heads: number;
  /** Width of each head. */
  dimHead: number;
}

interface Dims {
  /** Examples. */
  b: number;
  /** Positions per example (H·W). */
  n: number;
  /** Input channels. */
  c: number;
  heads: number;
  /** Head width. */
  d: number;
  /** heads · d. */
  hd: number;
  /** Rows: b · n. */
  p: number;
}

function dimsOf(x: Info, w: Info, attrs: tf.NamedAttrMap): Dims {
  const heads = attrs.heads as number;
  const d = attrs.dimHead as number;
  const [b, height, width, c] = x.shape;
  const hd = heads * d;
  if (w.shape.length !== 4 || w.shape[2] !== c || w.shape[3] !== 3 * hd) {
    throw new Error(
      `${FORWARD}: weight shape ${w.shape} does not fit ${c} channels, ${heads}x${d}`,
    );
  }
  return { b, n: height * width, c, heads, d, hd, p: b * height * width };
}

/** A Float32Array over the whole wasm heap, renewed when the heap grows (which detaches it). */
class Heap {
  #backend: WasmBackend;
  #f32: Float32Array | undefined;

  constructor(backend: WasmBackend) {
    this.#backend = backend;
  }

  get f32(): Float32Array {
    const buffer = this.#backend.wasm.HEAPU8.buffer;
    if (this.#f32 === undefined || this.#f32.buffer !== buffer) {
      this.#f32 = wholeHeapF32(this.#backend);
    }
    return this.#f32;
  }

  /** Float index of `info`'s first element. */
  at(info: Info): number {
    return heapOffset(this.#backend, info) >>> 2;
  }
}

/** out [cols, rows] = transpose of the [rows, cols] matrix at `src` (float indices). */
function transposeInto(
  f: Float32Array,
  src: number,
  dst: number,
  rows: number,
  cols: number,
): void {
  for (let r0 = 0; r0 < rows; r0 += 8) {
    const r1 = Math.min(rows, r0 + 8);
    for (let c0 = 0; c0 < cols; c0 += 8) {
      const c1 = Math.min(cols, c0 + 8);
      for (let r = r0; r < r1; r++) {
        let s = src + r * cols + c0;
        let t = dst + c0 * rows + r;
        for (let c = c0; c < c1; c++) {
          f[t] = f[s];
          s++;
          t += rows;
        }
      }
    }
  }
}

/** XNNPACK product of `a` at float offset `aOff` [m, k] and `b` [k, n] into `out`. */
function product(
  backend: WasmBackend,
  operands: { a: Info; aOff: number; b: Info; bOff: number; out: Info; outOff: number },
  dims: { m: number; k: number; n: number },
): void {
  const { m, k, n } = dims;
  const a = view(backend, operands.a, operands.aOff, [m, k]);
  const b = view(backend, operands.b, operands.bOff, [k, n]);
  const out = view(backend, operands.out, operands.outOff, [m, n]);
  gemm(backend, { a, b, out }, dims);
  releaseView(backend, a, b, out);
}

function softmaxRows(backend: WasmBackend, x: Info, rows: number, cols: number): Info {
  const config = tf.getKernel("Softmax", BACKEND);
  if (config === undefined) throw new Error("wasm Softmax kernel is not registered");
  const out = config.kernelFunc({
    inputs: { logits: { ...x, shape: [rows, cols] } },
    backend: backend as unknown as tf.KernelBackend,
    attrs: { dim: 1 },
  });
  if (Array.isArray(out)) throw new Error("Softmax returned several outputs");
  return out;
}

function need(inputs: tf.NamedTensorInfoMap, name: string): Info {
  const info = inputs[name];
  if (info === undefined) throw new Error(`${FORWARD}: missing input '${name}'`);
  return info;
}

function forward(
  inputs: tf.NamedTensorInfoMap,
  backend: WasmBackend,
  attrs: tf.NamedAttrMap,
): Info[] {
  const x = need(inputs, "x");
  const w = need(inputs, "w");
  const dims = dimsOf(x, w, attrs);
  const { b, n, c, heads, d, hd, p } = dims;
  const heap = new Heap(backend);
  const blocks = 3 * heads;
  // The weight's 3·heads column blocks, each a contiguous [C, d] matrix.
  const wb = backend.makeOutput([blocks, c, d], "float32");
  const qkv = [0, 1, 2].map(() => backend.makeOutput([heads, b, n, d], "float32"));
  {
    const f = heap.f32;
    const src = heap.at(w);
    const dst = heap.at(wb);
    for (let blk = 0; blk < blocks; blk++) {
      for (let ci = 0; ci < c; ci++) {
        const s = src + ci * 3 * hd + blk * d;
        f.copyWithin(dst + (blk * c + ci) * d, s, s + d);
      }
    }
  }
  for (let blk = 0; blk < blocks; blk++) {
    const h = blk % heads;
    product(backend, {
      a: x,
      aOff: 0,
      b: wb,
      bOff: blk * c * d,
      out: qkv[Math.floor(blk / heads)],
      outOff: h * p * d,
    }, { m: p, k: c, n: d });
  }
  dispose(backend, wb);
  const [q, k, v] = qkv;
  const probs = softmaxRows(backend, q, heads * p, d); // P [heads, b, n, d]
  dispose(backend, q);
  const kRaw = backend.makeOutput([heads, b, d, n], "float32");
  {
    const f = heap.f32;
    const src = heap.at(k);
    const dst = heap.at(kRaw);
    for (let blk = 0; blk < heads * b; blk++) {
      transposeInto(f, src + blk * n * d, dst + blk * n * d, n, d);
    }
  }
  dispose(backend, k);
  const kt = softmaxRows(backend, kRaw, heads * b * d, n); // K̃ᵀ [heads, b, d, n]
  dispose(backend, kRaw);
  const ctx = backend.makeOutput([heads, b, d, d], "float32");
  for (let blk = 0; blk < heads * b; blk++) {
    product(backend, {
      a: kt,
      aOff: blk * d * n,
      b: v,
      bOff: blk * n * d,
      out: ctx,
      outOff: blk * d * d,
    }, { m: d, k: n, n: d });
  }
  const scaled = backend.makeOutput([heads, b, d, d], "float32");
  {
    const f = heap.f32;
    const src = heap.at(ctx);
    const dst = heap.at(scaled);
    const s = d ** -0.5;
    for (let i = 0; i < heads * b * d * d; i++) f[dst + i] = f[src + i] * s;
  }
  const o = backend.makeOutput([heads, b, n, d], "float32");
  for (let blk = 0; blk < heads * b; blk++) {
    product(backend, {
      a: probs,
      aOff: blk * n * d,
      b: scaled,
      bOff: blk * d * d,
      out: o,
      outOff: blk * n * d,
    }, { m: n, k: d, n: d });
  }
  dispose(backend, scaled);
  const merged = backend.makeOutput([b, x.shape[1], x.shape[2], hd], "float32");
  {
    const f = heap.f32;
    const src = heap.at(o);
    const dst = heap.at(merged);
    for (let h = 0; h < heads; h++) {
      for (let row = 0; row < p; row++) {
        const s = src + (h * p + row) * d;
        f.copyWithin(dst + row * hd + h * d, s, s + d);
      }
    }
  }
  dispose(backend, o);
  return [merged, probs, kt, v, ctx];
}

function backward(
  inputs: tf.NamedTensorInfoMap,
  backend: WasmBackend,
  attrs: tf.NamedAttrMap,
): Info[] {
  const [dy, x, w, probs, kt, v, ctx] = ["dy", "x", "w", "probs", "kt", "v", "ctx"].map((name) =>
    need(inputs, name)
  );
  const dims = dimsOf(x, w, attrs);
  const { b, n, c, heads, d, hd, p } = dims;
  const heap = new Heap(backend);
  const s = d ** -0.5;
  const width = 3 * hd;
  // Gradients of q, k, v in both layouts: [p, 3hd] for dx, [3hd, p] for dW.
  const dqkv = backend.makeOutput([p, width], "float32");
  const dqkvT = backend.makeOutput([width, p], "float32");
  // Per-block scratch: dO, dP, Pᵀ, K̃, dK̃ [n, d] or [d, n]; (s·ctx)ᵀ, dctx, dctxᵀ [d, d].
  const dO = backend.makeOutput([n, d], "float32");
  const dP = backend.makeOutput([n, d], "float32");
  const pT = backend.makeOutput([d, n], "float32");
  const kTil = backend.makeOutput([n, d], "float32");
  const dK = backend.makeOutput([n, d], "float32");
  const dV = backend.makeOutput([n, d], "float32");
  const ctxT = backend.makeOutput([d, d], "float32");
  const dctx = backend.makeOutput([d, d], "float32");
  const dctxT = backend.makeOutput([d, d], "float32");
  for (let h = 0; h < heads; h++) {
    for (let e = 0; e < b; e++) {
      const blk = h * b + e;
      const rows = e * n; // first row of this example in [p, ·] layouts
      let f = heap.f32;
      // dO: this head's channels of dy; (s·ctx)ᵀ.
      {
        const src = heap.at(dy) + rows * hd + h * d;
        const dst = heap.at(dO);
        for (let i = 0; i < n; i++) f.copyWithin(dst + i * d, src + i * hd, src + i * hd + d);
        const cs = heap.at(ctx) + blk * d * d;
        const ct = heap.at(ctxT);
        for (let i = 0; i < d; i++) {
          for (let j = 0; j < d; j++) f[ct + j * d + i] = f[cs + i * d + j] * s;
        }
        transposeInto(f, heap.at(probs) + blk * n * d, heap.at(pT), n, d);
        transposeInto(f, heap.at(kt) + blk * d * n, heap.at(kTil), d, n);
      }
      // dP = dO (s·ctx)ᵀ;  dctx = s · Pᵀ dO.
      product(backend, { a: dO, aOff: 0, b: ctxT, bOff: 0, out: dP, outOff: 0 }, {
        m: n,
        k: d,
        n: d,
      });
      product(backend, { a: pT, aOff: 0, b: dO, bOff: 0, out: dctx, outOff: 0 }, {
        m: d,
        k: n,
        n: d,
      });
      f = heap.f32;
      {
        const dc = heap.at(dctx);
        const dcT = heap.at(dctxT);
        for (let i = 0; i < d; i++) {
          for (let j = 0; j < d; j++) {
            const g = f[dc + i * d + j] * s;
            f[dc + i * d + j] = g;
            f[dcT + j * d + i] = g;
          }
        }
      }
      // dV = K̃ dctx;  dK̃ = v dctxᵀ.
      product(backend, { a: kTil, aOff: 0, b: dctx, bOff: 0, out: dV, outOff: 0 }, {
        m: n,
        k: d,
        n: d,
      });
      product(backend, { a: v, aOff: blk * n * d, b: dctxT, bOff: 0, out: dK, outOff: 0 }, {
        m: n,
        k: d,
        n: d,
      });
      f = heap.f32;
      const g = heap.at(dqkv);
      const gT = heap.at(dqkvT);
      // dq: softmax over each row's d channels. dk: softmax over the n positions of each column.
      {
        const pr = heap.at(probs) + blk * n * d;
        const dp = heap.at(dP);
        for (let i = 0; i < n; i++) {
          let dot = 0;
          for (let j = 0; j < d; j++) dot += f[dp + i * d + j] * f[pr + i * d + j];
          const out = g + (rows + i) * width + h * d;
          for (let j = 0; j < d; j++) {
            const pij = f[pr + i * d + j];
            f[out + j] = pij * (f[dp + i * d + j] - dot);
          }
        }
        const kk = heap.at(kTil);
        const dk = heap.at(dK);
        const dv = heap.at(dV);
        for (let j = 0; j < d; j++) {
          let dot = 0;
          for (let i = 0; i < n; i++) dot += f[dk + i * d + j] * f[kk + i * d + j];
          const qRow = gT + (h * d + j) * p + rows;
          const kRow = gT + (hd + h * d + j) * p + rows;
          const vRow = gT + (2 * hd + h * d + j) * p + rows;
          for (let i = 0; i < n; i++) {
            const gk = f[kk + i * d + j] * (f[dk + i * d + j] - dot);
            const base = g + (rows + i) * width + h * d + j;
            f[base + hd] = gk;
            f[kRow + i] = gk;
            const gv = f[dv + i * d + j];
            f[base + 2 * hd] = gv;
            f[vRow + i] = gv;
            f[qRow + i] = f[base];
          }
        }
      }
    }
  }
  dispose(backend, dO, dP, pT, kTil, dK, dV, ctxT, dctx, dctxT);
  // dx = dqkv Wᵀ;  dW = (dqkvᵀ x)ᵀ.
  const wT = backend.makeOutput([width, c], "float32");
  {
    const f = heap.f32;
    transposeInto(f, heap.at(w), heap.at(wT), c, width);
  }
  const dx = backend.makeOutput(x.shape, "float32");
  product(backend, { a: dqkv, aOff: 0, b: wT, bOff: 0, out: dx, outOff: 0 }, {
    m: p,
    k: width,
    n: c,
  });
  const dwT = backend.makeOutput([width, c], "float32");
  product(backend, { a: dqkvT, aOff: 0, b: x, bOff: 0, out: dwT, outOff: 0 }, {
    m: width,
    k: p,
    n: c,
  });
  const dw = backend.makeOutput(w.shape, "float32");
  {
    const f = heap.f32;
    transposeInto(f, heap.at(dwT), heap.at(dw), width, c);
  }
  dispose(backend, wT, dwT, dqkv, dqkvT);
  return [dx, dw];
}

/** The kernels of the fused attention core for the wasm backend (installed by registerWasmKernels). */
export const attentionKernels: tf.KernelConfig[] = fusedKernelPair(
  { forward: FORWARD, backward: BACKWARD },
  { forward, backward },
);

/** Whether the fused core runs on the active backend. */
export function hasFusedAttention(): boolean {
  return wasmKernelActive(FORWARD);
}

/**
 * The merged heads [B, H, W, heads · dimHead] of linear attention for the normalised input
 * `x` and the `to_qkv` weight `w` [1, 1, C, 3 · heads · dimHead], with its gradient, on the fused
 * wasm kernels (see the module doc). Use only when {@link hasFusedAttention}.
 */
export function linearAttentionCore(
  x: tf.Tensor4D,
  w: tf.Tensor4D,
  options: AttentionCoreOptions,
): tf.Tensor4D {
  const attrs = { heads: options.heads, dimHead: options.dimHead };
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xIn, wIn, save] = args as [tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    const [merged, probs, kt, v, ctx] = tf.engine().runKernel(
      FORWARD,
      { x: xIn, w: wIn },
      attrs,
    ) as tf.Tensor[];
    save([xIn, wIn, probs, kt, v, ctx]);
    return {
      value: merged,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sx, sw, sp, skt, sv, sctx] = saved;
        return tf.engine().runKernel(
          BACKWARD,
          { dy, x: sx, w: sw, probs: sp, kt: skt, v: sv, ctx: sctx },
          attrs,
        ) as tf.Tensor[];
      },
    };
  });
  return op(x, w) as tf.Tensor4D;
}
