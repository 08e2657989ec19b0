/**
 * The operations the U-Net's modules are written in, independent of what runs them. The modules
 * (./unet.ts, ./conditioning.ts) call only these, so one description of the network serves every
 * engine: ./layers.ts runs them in TensorFlow.js, ./graph.ts records them as a graph of layer
 * ops that the WebGPU engine (src/gpu) compiles and the ONNX exporter emits.
 *
 * Parameters are named by their PyTorch state-dict names: an op that reads parameters takes the
 * module's prefix and reads `<prefix>.weight` / `<prefix>.bias` (conv weights HWIO, linear
 * weights [in, out]). Activations are NHWC; vectors per example are [B, n].
 * @module
 */

/** Heads of an attention block. */
export interface AttentionOptions {
  /** Number of heads (4 in the reference). */
  heads: number;
  /** Width of each head (32 in the reference). */
  dimHead: number;
}

/** Heads of a cross-attention block, and the width of each label token. */
export interface CrossAttentionOptions extends AttentionOptions {
  /** Width of each label token. */
  width: number;
}

/** The layer operations over tensors (or graph nodes) of type `T`. */
export interface LayerOps<T> {
  /** Conv2d stride 1, 'same' padding, k from `<prefix>.weight` [k, k, cin, cout], optional bias. */
  conv(x: T, prefix: string, options: { bias: boolean }): T;
  /** `x @ W + b` on [B, in] (`<prefix>.weight` [in, out], `<prefix>.bias`). */
  linear(x: T, prefix: string): T;
  /** GroupNorm with `groups` groups, eps 1e-5, affine `<prefix>.weight` / `.bias`. */
  groupNorm(x: T, prefix: string, groups: number): T;
  /** x · sigmoid(x). */
  silu(x: T): T;
  /** Exact GELU (erf), PyTorch's default. */
  gelu(x: T): T;
  /** Elementwise sum of two tensors of one shape. */
  add(a: T, b: T): T;
  /** h · (1 + scale) + shift with (scale, shift) the halves of ss [B, 2C], h [B, H, W, C]. */
  scaleShift(h: T, ss: T): T;
  /** Concatenation along channels. */
  concat(a: T, b: T): T;
  /** Sinusoidal embedding [B, dim] of float timesteps [B]: all sines, then all cosines. */
  timeEmbedding(t: T, dim: number): T;
  /** pixel_unshuffle by 2: [B, H, W, C] -> [B, H/2, W/2, 4C], channel order (c, p1, p2). */
  pixelUnshuffle(x: T): T;
  /** Nearest-neighbour 2x upsampling. */
  upsample(x: T): T;
  /**
   * Linear attention of the reference `LinearAttention` up to its `to_out`: the merged heads
   * [B, H, W, heads · dimHead] from the bias-free 1x1 conv `<prefix>.to_qkv`.
   */
  linearAttention(x: T, prefix: string, options: AttentionOptions): T;
  /** Full softmax attention over the H·W tokens, up to `to_out`: the merged heads. */
  attention(x: T, prefix: string, options: AttentionOptions): T;
  /**
   * Multi-head cross-attention of x [B, H, W, C] to the label tokens [B, tokens · width], up to
   * `to_out`: q the bias-free 1x1 conv `<prefix>.to_q` of x, k and v the bias-free linears
   * `<prefix>.to_k`, `<prefix>.to_v` of the tokens; the merged heads.
   */
  crossAttention(x: T, tokens: T, prefix: string, options: CrossAttentionOptions): T;
  /** Training: inverted dropout with the run's next mask; sampling: x itself. */
  dropout(x: T, rate: number): T;
  /** The learned null embedding `name` [n] repeated for each example of `like` ([B, ...]). */
  nullTokens(name: string, like: T): T;
  /**
   * h · (1 - m) + null · m per example, m = drop [B, 1] (1: the example's labels are dropped),
   * `name` the null embedding: always mixed, so that every parameter has a gradient.
   */
  nullMix(h: T, name: string, drop: T): T;
}

/** A conditional forward pass's inputs: encoded labels [B, width] and the drop mask [B, 1]. */
export interface EncodedCondition<T> {
  /** The encoded labels (./conditioning.ts `encodeLabels`). */
  labels: T;
  /** 1 where the example gets the null embedding, else 0. */
  drop: T;
}

/** What a forward pass reads: the ops, and a conditional network's encoded labels. */
export interface ForwardContext<T> {
  /** The layer operations. */
  ops: LayerOps<T>;
  /** A conditional network's labels; absent: the null embedding for every example. */
  condition?: EncodedCondition<T>;
}
