/**
 * The building blocks of the U-Net as pure functions of (input, parameters), NHWC layout.
 * Parameter names follow PyTorch's state dict of the reference network, so `p(prefix + ".weight")`
 * reads the tensor PyTorch calls `<prefix>.weight`; convolution weights are stored HWIO and
 * linear weights [in, out] (PyTorch: OIHW and [out, in]).
 * @module
 */
import type { Rng } from "../rng.ts";
import { fusedOps } from "./ops.ts";
import { tf } from "../tf.ts";
import type { AttentionOptions, CrossAttentionOptions, LayerOps } from "./layer_ops.ts";

export type { AttentionOptions } from "./layer_ops.ts";

/** Looks up a parameter tensor by its PyTorch state-dict name. */
export type ParamLookup = (name: string) => tf.Tensor;

/** Conv2d with bias (`<prefix>.weight` HWIO, `<prefix>.bias`), stride 1, 'same' padding. */
export function conv(x: tf.Tensor4D, p: ParamLookup, prefix: string, bias = true): tf.Tensor4D {
  const y = tf.conv2d(x, p(`${prefix}.weight`) as tf.Tensor4D, 1, "same");
  return bias ? tf.add(y, p(`${prefix}.bias`)) : y;
}

/** Linear layer `x @ W + b` on [B, in]. */
export function linear(x: tf.Tensor2D, p: ParamLookup, prefix: string): tf.Tensor2D {
  return tf.add(tf.matMul(x, p(`${prefix}.weight`) as tf.Tensor2D), p(`${prefix}.bias`));
}

/** GroupNorm over NHWC with `groups` groups, eps 1e-5, affine `<prefix>.weight/bias`. */
export function groupNorm(
  x: tf.Tensor4D,
  p: ParamLookup,
  prefix: string,
  groups: number,
): tf.Tensor4D {
  // A backend's fused kernel (wasm: one op with a hand-written gradient), when it has one.
  const affine = { gamma: p(`${prefix}.weight`), beta: p(`${prefix}.bias`) };
  const fused = fusedOps().groupNorm?.(x, affine, { groups });
  if (fused !== undefined) return fused;
  const [b, h, w, c] = x.shape;
  const g = tf.reshape(x, [b, h * w, groups, c / groups]);
  const { mean, variance } = tf.moments(g, [1, 3], true);
  const normed = tf.mul(tf.sub(g, mean), tf.rsqrt(tf.add(variance, 1e-5)));
  const y = tf.reshape(normed, [b, h, w, c]);
  return tf.add(tf.mul(y, affine.gamma), affine.beta);
}

/** SiLU (swish): x * sigmoid(x). */
export function silu<T extends tf.Tensor>(x: T): T {
  return tf.mul(x, tf.sigmoid(x));
}

/** Exact GELU: 0.5 x (1 + erf(x / sqrt 2)), PyTorch's default. */
export function gelu<T extends tf.Tensor>(x: T): T {
  return tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1));
}

/**
 * Sinusoidal embedding of size `dim` of float timesteps [B]: all sines then all cosines, with
 * frequencies exp(-ln(10000) i / (dim/2 - 1)), as the reference `SinusoidalPosEmb`.
 */
export function sinusoidalEmbedding(t: tf.Tensor1D, dim: number): tf.Tensor2D {
  const half = dim / 2;
  const freqs = new Float32Array(half);
  const scale = Math.log(10000) / (half - 1);
  for (let i = 0; i < half; i++) freqs[i] = Math.exp(-scale * i);
  const args = tf.mul(tf.reshape(t, [-1, 1]), tf.tensor2d(freqs, [1, half]));
  return tf.concat([tf.sin(args), tf.cos(args)], 1) as tf.Tensor2D;
}

/** pixel_unshuffle by 2: [B, H, W, C] -> [B, H/2, W/2, 4C] with channel order (c, p1, p2). */
export function pixelUnshuffle(x: tf.Tensor4D): tf.Tensor4D {
  const [b, h, w, c] = x.shape;
  const r = tf.reshape(x, [b, h / 2, 2, w / 2, 2, c]);
  return tf.reshape(tf.transpose(r, [0, 1, 3, 5, 2, 4]), [b, h / 2, w / 2, 4 * c]);
}

/**
 * Nearest-neighbour 2x upsampling as reshape + broadcast (tf.image.resizeNearestNeighbor has a
 * wrong gradient on the cpu backend for batch > 1).
 */
export function upsampleNearest2x(x: tf.Tensor4D): tf.Tensor4D {
  const [b, h, w, c] = x.shape;
  const r = tf.reshape(x, [b, h, 1, w, 1, c]);
  return tf.reshape(tf.mul(r, tf.ones([1, 1, 2, 1, 2, 1])), [b, 2 * h, 2 * w, c]);
}

/**
 * q, k and v of shape [B * heads, HW, dimHead]: the `to_qkv` 1x1 conv (no bias) is applied as
 * three convs with the thirds of its weight, which is cheaper than splitting the 3 * hidden
 * channel activation (SplitV is slow on wasm).
 */
function qkvHeads(
  x: tf.Tensor4D,
  p: ParamLookup,
  prefix: string,
  options: AttentionOptions,
): tf.Tensor3D[] {
  const [b, h, w, c] = x.shape;
  const { heads, dimHead } = options;
  const hidden = heads * dimHead;
  const weight = p(`${prefix}.to_qkv.weight`);
  return [0, 1, 2].map((i) => {
    const wi = tf.slice(weight, [0, 0, 0, i * hidden], [1, 1, c, hidden]) as tf.Tensor4D;
    const r = tf.reshape(tf.conv2d(x, wi, 1, "same"), [b, h * w, heads, dimHead]);
    return tf.reshape(tf.transpose(r, [0, 2, 1, 3]), [b * heads, h * w, dimHead]);
  });
}

/** Merges [B * heads, HW, dimHead] back into [B, H, W, heads * dimHead] (channel = head * dimHead + d). */
function mergeHeads(o: tf.Tensor3D, shape: [number, number, number], heads: number): tf.Tensor4D {
  const [b, h, w] = shape;
  const dimHead = o.shape[2];
  const r = tf.reshape(o, [b, heads, h * w, dimHead]);
  return tf.reshape(tf.transpose(r, [0, 2, 1, 3]), [b, h, w, heads * dimHead]);
}

/**
 * Linear attention (reference `LinearAttention`) up to `to_out`: q softmaxed over the head
 * channels and scaled, k softmaxed over positions, out = (k vᵀ)ᵀ q, heads merged.
 */
export function linearAttention(
  x: tf.Tensor4D,
  p: ParamLookup,
  prefix: string,
  options: AttentionOptions,
): tf.Tensor4D {
  const [b, h, w] = x.shape;
  // A backend's fused kernel (wasm: one op with a hand-written gradient), when it has one.
  const merged = fusedOps().linearAttention?.(
    x,
    p(`${prefix}.to_qkv.weight`) as tf.Tensor4D,
    options,
  );
  if (merged !== undefined) return merged;
  const [q0, k0, v] = qkvHeads(x, p, prefix, options);
  const q = tf.mul(tf.softmax(q0, -1), options.dimHead ** -0.5);
  const k = tf.softmax(tf.transpose(k0, [0, 2, 1]), -1); // [BH, d, n], softmax over n
  const context = tf.matMul(k, v); // [BH, d, e]
  const out = tf.matMul(q, context); // [BH, n, e]
  return mergeHeads(out as tf.Tensor3D, [b, h, w], options.heads);
}

/** Full softmax attention over the HW tokens (reference `Attention`) up to `to_out`. */
export function attention(
  x: tf.Tensor4D,
  p: ParamLookup,
  prefix: string,
  options: AttentionOptions,
): tf.Tensor4D {
  const [b, h, w] = x.shape;
  const [q, k, v] = qkvHeads(x, p, prefix, options);
  const sim = tf.matMul(tf.mul(q, options.dimHead ** -0.5), k, false, true); // [BH, n, n]
  const out = tf.matMul(tf.softmax(sim, -1), v); // [BH, n, d]
  return mergeHeads(out as tf.Tensor3D, [b, h, w], options.heads);
}

/**
 * Cross-attention of x [B, H, W, C] to the label tokens [B, tokens · width] up to `to_out`:
 * softmax(q kᵀ / √dimHead) v with q = to_q(x) (1x1, no bias), k, v bias-free linears.
 */
export function crossAttention(
  x: tf.Tensor4D,
  context: tf.Tensor2D,
  p: ParamLookup,
  prefix: string,
  options: CrossAttentionOptions,
): tf.Tensor4D {
  const [b, hgt, wid] = x.shape;
  const { heads, dimHead: dh } = options;
  const n = hgt * wid;
  const q = tf.transpose(
    tf.reshape(conv(x, p, `${prefix}.to_q`, false), [b, n, heads, dh]),
    [0, 2, 1, 3],
  );
  const tokens = tf.reshape(context, [-1, options.width]);
  const kv = (name: string) =>
    tf.transpose(
      tf.reshape(tf.matMul(tokens, p(`${prefix}.${name}.weight`) as tf.Tensor2D), [
        b,
        -1,
        heads,
        dh,
      ]),
      [0, 2, 1, 3],
    );
  const scores = tf.mul(tf.matMul(q, kv("to_k"), false, true), 1 / Math.sqrt(dh));
  const out = tf.matMul(tf.softmax(scores), kv("to_v"));
  return tf.reshape(tf.transpose(out, [0, 2, 1, 3]), [b, hgt, wid, heads * dh]) as tf.Tensor4D;
}

/**
 * The inverted-dropout mask of `shape`: 1 / (1 - rate) where kept, 0 where dropped, one 32-bit
 * draw of `rng` per element in row-major order (an element is dropped when its draw is below
 * rate · 2^32). Deterministic for a given generator state, on every backend.
 */
export function dropoutMask(shape: number[], options: { rate: number; rng: Rng }): tf.Tensor {
  const { rate, rng } = options;
  const size = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(size);
  const threshold = Math.floor(rate * 0x100000000);
  const keep = 1 / (1 - rate);
  for (let i = 0; i < size; i++) data[i] = rng.nextUint32() >= threshold ? keep : 0;
  return tf.tensor(data, shape);
}

/** Dropout with a mask from {@link dropoutMask} (never unseeded tf.random); rate 0 is identity. */
export function dropout<T extends tf.Tensor>(x: T, options: { rate: number; rng: Rng }): T {
  if (options.rate <= 0) return x;
  return tf.mul(x, dropoutMask(x.shape, options));
}

/**
 * The layer operations in TensorFlow.js over the parameters `p`: what `Unet.forward` runs on
 * the tfjs backends. With `dropoutRng` (training) dropout draws its masks from it in forward
 * order; without it dropout is off. Call the forward inside `tf.tidy`.
 */
export function tfjsLayers(
  p: ParamLookup,
  options: { dropoutRng?: Rng } = {},
): LayerOps<tf.Tensor> {
  const { dropoutRng } = options;
  const t4 = (x: tf.Tensor) => x as tf.Tensor4D;
  return {
    conv: (x, prefix, o) => conv(t4(x), p, prefix, o.bias),
    linear: (x, prefix) => linear(x as tf.Tensor2D, p, prefix),
    groupNorm: (x, prefix, groups) => groupNorm(t4(x), p, prefix, groups),
    silu,
    gelu,
    add: (a, b) => tf.add(a, b),
    scaleShift: (h, ss) => {
      const c2 = ss.shape[1]!;
      const [scale, shift] = tf.split(tf.reshape(ss, [-1, 1, 1, c2]), 2, 3);
      return tf.add(tf.mul(h, tf.add(scale, 1)), shift);
    },
    concat: (a, b) => tf.concat([a, b], 3),
    timeEmbedding: (t, dim) => sinusoidalEmbedding(t as tf.Tensor1D, dim),
    pixelUnshuffle: (x) => pixelUnshuffle(t4(x)),
    upsample: (x) => upsampleNearest2x(t4(x)),
    linearAttention: (x, prefix, o) => linearAttention(t4(x), p, prefix, o),
    attention: (x, prefix, o) => attention(t4(x), p, prefix, o),
    crossAttention: (x, tokens, prefix, o) =>
      crossAttention(t4(x), tokens as tf.Tensor2D, p, prefix, o),
    dropout: (x, rate) => dropoutRng ? dropout(x, { rate, rng: dropoutRng }) : x,
    nullTokens: (name, like) => tf.tile(tf.reshape(p(name), [1, -1]), [like.shape[0]!, 1]),
    nullMix: (h, name, drop) => {
      const nullEmb = tf.reshape(p(name), [1, -1]);
      return tf.add(tf.mul(h, tf.sub(1, drop)), tf.mul(nullEmb, drop));
    },
  };
}
