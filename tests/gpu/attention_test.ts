/**
 * The attention kernels (src/gpu/kernels/attention.ts): linear, full softmax and cross-attention,
 * each forward and backward against its float64 reference at odd sizes (several chunks and
 * tiles, heads 2 x dimHead 3 and one head of 32), accumulate on and off, the same bytes twice;
 * the forward references against the tfjs layers (layers.ts `linearAttention`, `attention`,
 * conditioning.ts `CrossAttention`) with identity projections, the backward references against
 * central finite differences in float64.
 */
import assert from "node:assert/strict";
import {
  attentionBackward,
  attentionBackwardRef,
  attentionForward,
  attentionForwardRef,
  type AttentionShape,
  crossAttentionBackward,
  crossAttentionBackwardRef,
  crossAttentionForward,
  crossAttentionForwardRef,
  type CrossAttentionShape,
  linearAttentionBackward,
  linearAttentionBackwardRef,
  linearAttentionForward,
  linearAttentionForwardRef,
  linearAttentionScratch,
} from "../../src/gpu/kernels/attention.ts";
import { CrossAttention } from "../../src/model/conditioning.ts";
import * as layers from "../../src/model/layers.ts";
import { ParamScope } from "../../src/model/params.ts";
import { tf } from "../../src/tf.ts";
import { assertClose, device, noGpu, testData } from "./device.ts";
import { runPasses } from "./passes.ts";

await tf.setBackend("cpu");

const SMALL: AttentionShape = { batch: 3, pixels: 35, heads: 2, dimHead: 3 };
/** 143 positions: 3 linear-attention chunks, 3 key tiles, 3 query tiles. */
const LONG: AttentionShape = { batch: 2, pixels: 11 * 13, heads: 2, dimHead: 3 };
/** A real head width: 3 chunks of 32 positions, 9 tiles of 8 positions in the linear backward. */
const WIDE: AttentionShape = { batch: 1, pixels: 70, heads: 1, dimHead: 32 };

function size(s: AttentionShape): { hidden: number; rows: number } {
  return { hidden: s.heads * s.dimHead, rows: s.batch * s.pixels };
}

function bytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Runs forward and backward (plain and accumulate, twice) and checks against the references. */
async function checkLinear(s: AttentionShape, seed: number, repeat = false): Promise<void> {
  const { hidden, rows } = size(s);
  const qkv = testData(rows * 3 * hidden, seed).map((v) => 2 * v);
  const dout = testData(rows * hidden, seed + 1);
  const fwd = await runPasses(device(), linearAttentionForward(s), { qkv });
  const ref = linearAttentionForwardRef(qkv, s);
  const what = JSON.stringify(s);
  assertClose(fwd.out, ref.out, 1e-5, `linear out ${what}`);
  assertClose(fwd.context, ref.context, 1e-5, `linear context ${what}`);
  assert.equal(fwd.tmp.length, linearAttentionScratch(s).forward);
  const dq0 = testData(rows * 3 * hidden, seed + 2);
  const inputs = { qkv, dout, context: fwd.context, kstats: fwd.kstats, dqkv: dq0 };
  const g = await runPasses(device(), linearAttentionBackward(s), inputs);
  const gref = linearAttentionBackwardRef({ dout, qkv }, s);
  assertClose(g.dqkv, gref, 1e-5, `linear dqkv ${what}`);
  if (!repeat) return;
  const again = await runPasses(device(), linearAttentionBackward(s), inputs);
  assert.deepEqual(bytes(again.dqkv), bytes(g.dqkv));
  const acc = await runPasses(device(), linearAttentionBackward(s, { accumulate: true }), inputs);
  assertClose(acc.dqkv, g.dqkv.map((v, i) => v + dq0[i]), 1e-6, `linear accumulate ${what}`);
}

async function checkFull(s: AttentionShape, seed: number, repeat = false): Promise<void> {
  const { hidden, rows } = size(s);
  const qkv = testData(rows * 3 * hidden, seed).map((v) => 2 * v);
  const dout = testData(rows * hidden, seed + 1);
  const fwd = await runPasses(device(), attentionForward(s), { qkv });
  const ref = attentionForwardRef(qkv, s);
  const what = JSON.stringify(s);
  assertClose(fwd.out, ref.out, 1e-5, `attention out ${what}`);
  assertClose(fwd.lse, ref.lse, 1e-5, `attention lse ${what}`);
  const dq0 = testData(rows * 3 * hidden, seed + 2);
  const inputs = { qkv, dout, out: fwd.out, lse: fwd.lse, dqkv: dq0 };
  const g = await runPasses(device(), attentionBackward(s), inputs);
  assertClose(g.dqkv, attentionBackwardRef({ dout, qkv }, s), 1e-5, `attention dqkv ${what}`);
  if (!repeat) return;
  const again = await runPasses(device(), attentionForward(s), { qkv });
  assert.deepEqual(bytes(again.out), bytes(fwd.out));
  assert.deepEqual(bytes(again.lse), bytes(fwd.lse));
  const g2 = await runPasses(device(), attentionBackward(s), inputs);
  assert.deepEqual(bytes(g2.dqkv), bytes(g.dqkv));
  const acc = await runPasses(device(), attentionBackward(s, { accumulate: true }), inputs);
  assertClose(acc.dqkv, g.dqkv.map((v, i) => v + dq0[i]), 1e-6, `attention accumulate ${what}`);
}

async function checkCross(s: CrossAttentionShape, seed: number, repeat = false): Promise<void> {
  const { hidden, rows } = size(s);
  const kv = s.batch * s.tokens * hidden;
  const q = testData(rows * hidden, seed).map((v) => 2 * v);
  const k = testData(kv, seed + 1).map((v) => 2 * v);
  const v = testData(kv, seed + 2);
  const dout = testData(rows * hidden, seed + 3);
  const fwd = await runPasses(device(), crossAttentionForward(s), { q, k, v });
  const ref = crossAttentionForwardRef({ q, k, v }, s);
  const what = JSON.stringify(s);
  assertClose(fwd.out, ref.out, 1e-5, `cross out ${what}`);
  assertClose(fwd.lse, ref.lse, 1e-5, `cross lse ${what}`);
  const dq0 = testData(rows * hidden, seed + 4);
  const inputs = { q, k, v, dout, out: fwd.out, lse: fwd.lse, dq: dq0, dk: dq0.slice(0, kv) };
  const g = await runPasses(device(), crossAttentionBackward(s), inputs);
  const gref = crossAttentionBackwardRef({ dout, q, k, v }, s);
  assertClose(g.dq, gref.dq, 1e-5, `cross dq ${what}`);
  assertClose(g.dk, gref.dk, 1e-5, `cross dk ${what}`);
  assertClose(g.dv, gref.dv, 1e-5, `cross dv ${what}`);
  if (!repeat) return;
  const g2 = await runPasses(device(), crossAttentionBackward(s), inputs);
  for (const key of ["dq", "dk", "dv"]) assert.deepEqual(bytes(g2[key]), bytes(g[key]), key);
  const acc = await runPasses(device(), crossAttentionBackward(s, { accumulate: true }), inputs);
  assertClose(acc.dq, g.dq.map((x, i) => x + dq0[i]), 1e-6, `cross accumulate ${what}`);
  assert.deepEqual(acc.dk, g.dk);
}

Deno.test({
  name: "linear attention kernels equal the references (chunks, tiles, accumulate, bytes)",
  ignore: noGpu,
  fn: async () => {
    assert.equal(linearAttentionScratch(LONG).chunks, 3);
    assert.equal(linearAttentionScratch(WIDE).chunks, 3);
    await checkLinear(SMALL, 1);
    await checkLinear(LONG, 2, true);
    await checkLinear(WIDE, 3);
  },
});

Deno.test({
  name: "full attention kernels equal the references (key and query tiles, accumulate, bytes)",
  ignore: noGpu,
  fn: async () => {
    await checkFull(SMALL, 11);
    await checkFull(LONG, 12, true);
    await checkFull(WIDE, 13);
  },
});

Deno.test({
  name: "cross-attention kernels equal the references (accumulate on dq only, bytes)",
  ignore: noGpu,
  fn: async () => {
    await checkCross({ ...SMALL, tokens: 3 }, 21, true);
    await checkCross({ ...LONG, tokens: 1 }, 22);
    // 70 channels: two 64-channel tiles of the token pass.
    await checkCross({ batch: 2, pixels: 9, heads: 5, dimHead: 14, tokens: 8 }, 23);
  },
});

/** A parameter lookup over fixed tensors. */
function lookup(params: Record<string, tf.Tensor>): layers.ParamLookup {
  return (name) => {
    const t = params[name];
    if (t === undefined) throw new Error(`no parameter ${name}`);
    return t;
  };
}

function identity(c: number): tf.Tensor4D {
  return tf.reshape(tf.eye(c), [1, 1, c, c]) as tf.Tensor4D;
}

Deno.test("attention forward references equal the tfjs layers (identity projections)", () => {
  const s = SMALL;
  const { hidden, rows } = size(s);
  const data = testData(rows * 3 * hidden, 31).map((v) => 2 * v);
  const x = tf.tensor4d(data, [s.batch, 5, 7, 3 * hidden]);
  const options = { heads: s.heads, dimHead: s.dimHead };
  const p = lookup({
    "a.to_qkv.weight": identity(3 * hidden),
    "a.to_out.weight": identity(hidden),
    "a.to_out.bias": tf.zeros([hidden]),
    "a.to_out.0.weight": identity(hidden),
    "a.to_out.0.bias": tf.zeros([hidden]),
    "a.to_out.1.weight": tf.ones([hidden]),
    "a.to_out.1.bias": tf.zeros([hidden]),
  });
  const full = layers.attention(x, p, "a", options);
  assertClose(attentionForwardRef(data, s).out, full.dataSync(), 1e-5, "attention");
  // layers.linearAttention stops before to_out, as the kernel does.
  const lin = layers.linearAttention(x, p, "a", options);
  assertClose(linearAttentionForwardRef(data, s).out, lin.dataSync(), 1e-5, "linear attention");
});

Deno.test("crossAttentionForwardRef equals conditioning.ts CrossAttention", () => {
  const s: CrossAttentionShape = { ...SMALL, tokens: 3 };
  const { hidden, rows } = size(s);
  const width = 4;
  const scope = new ParamScope("ca");
  const block = new CrossAttention(scope, hidden, { width, heads: s.heads, dimHead: s.dimHead });
  const wk = tf.tensor2d(testData(width * hidden, 41), [width, hidden]);
  const wv = tf.tensor2d(testData(width * hidden, 42), [width, hidden]);
  const params: Record<string, tf.Tensor> = {
    "ca.norm.weight": tf.ones([hidden]),
    "ca.norm.bias": tf.zeros([hidden]),
    "ca.to_q.weight": identity(hidden),
    "ca.to_k.weight": wk,
    "ca.to_v.weight": wv,
    "ca.to_out.weight": identity(hidden),
    "ca.to_out.bias": tf.zeros([hidden]),
  };
  assert.deepEqual(scope.specs.map((spec) => spec.name).sort(), Object.keys(params).sort());
  const p = lookup(params);
  const x = tf.tensor4d(testData(rows * hidden, 43).map((v) => 3 * v), [s.batch, 5, 7, hidden]);
  const labels = tf.tensor2d(testData(s.batch * s.tokens * width, 44).map((v) => 2 * v), [
    s.batch,
    s.tokens * width,
  ]);
  const y = block.forward<tf.Tensor>(x, labels, { ops: layers.tfjsLayers(p) }) as tf.Tensor4D;
  const merged = tf.sub(y, x).dataSync();
  const tokens = tf.reshape(labels, [-1, width]) as tf.Tensor2D;
  const q = layers.groupNorm(x, p, "ca.norm", 1).dataSync();
  const k = tf.matMul(tokens, wk).dataSync();
  const v = tf.matMul(tokens, wv).dataSync();
  assertClose(crossAttentionForwardRef({ q, k, v }, s).out, merged, 1e-5, "cross-attention");
});

/** Central differences of Σ dout · f(inputs) with respect to each entry of `param`. */
function finiteDifferences(param: Float64Array, loss: () => number): Float64Array {
  const fd = new Float64Array(param.length);
  for (let i = 0; i < param.length; i++) {
    const v = param[i];
    const h = 1e-6;
    param[i] = v + h;
    const up = loss();
    param[i] = v - h;
    const down = loss();
    param[i] = v;
    fd[i] = (up - down) / (2 * h);
  }
  return fd;
}

function weighted(a: ArrayLike<number>, w: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * w[i];
  return s;
}

Deno.test("attention backward references equal central finite differences (float64)", () => {
  const s: AttentionShape = { batch: 2, pixels: 5, heads: 2, dimHead: 3 };
  const { hidden, rows } = size(s);
  const qkv = Float64Array.from(testData(rows * 3 * hidden, 51), (v) => 2 * v);
  const dout = Float64Array.from(testData(rows * hidden, 52));
  assertClose(
    linearAttentionBackwardRef({ dout, qkv }, s),
    finiteDifferences(qkv, () => weighted(linearAttentionForwardRef(qkv, s).out, dout)),
    1e-6,
    "linear",
  );
  assertClose(
    attentionBackwardRef({ dout, qkv }, s),
    finiteDifferences(qkv, () => weighted(attentionForwardRef(qkv, s).out, dout)),
    1e-6,
    "full",
  );
  const cs: CrossAttentionShape = { ...s, tokens: 2 };
  const kv = cs.batch * cs.tokens * hidden;
  const inputs = {
    q: Float64Array.from(testData(rows * hidden, 53), (v) => 2 * v),
    k: Float64Array.from(testData(kv, 54), (v) => 2 * v),
    v: Float64Array.from(testData(kv, 55)),
  };
  const grads = crossAttentionBackwardRef({ ...inputs, dout }, cs);
  const loss = () => weighted(crossAttentionForwardRef(inputs, cs).out, dout);
  assertClose(grads.dq, finiteDifferences(inputs.q, loss), 1e-6, "cross dq");
  assertClose(grads.dk, finiteDifferences(inputs.k, loss), 1e-6, "cross dk");
  assertClose(grads.dv, finiteDifferences(inputs.v, loss), 1e-6, "cross dv");
});
