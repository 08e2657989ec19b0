/**
 * The GroupNorm kernels (src/gpu/kernels/group_norm.ts): the kernels against their references
 * at odd sizes (one-pass and chunked statistics, several pixel chunks and channel tiles in the
 * backward), the forward reference against tfjs's `groupNorm` of src/model/layers.ts with the
 * residual block's scale-shift and SiLU, the backward reference against central finite
 * differences in float64, accumulate, and determinism.
 */
import assert from "node:assert/strict";
import {
  groupNormBackward,
  groupNormBackwardRef,
  groupNormBackwardScratch,
  groupNormForward,
  groupNormForwardRef,
  type GroupNormOptions,
  type GroupNormShape,
} from "../../src/gpu/kernels/group_norm.ts";
import { groupNorm, silu } from "../../src/model/layers.ts";
import { tf } from "../../src/tf.ts";
import { assertClose, device, noGpu, testData } from "./device.ts";
import { runPasses } from "./passes.ts";

await tf.setBackend("cpu");

const SMALL: GroupNormShape = { batch: 3, pixels: 35, channels: 6, groups: 3 };

type Case = {
  x: Float32Array<ArrayBuffer>;
  gamma: Float32Array<ArrayBuffer>;
  beta: Float32Array<ArrayBuffer>;
  ss: Float32Array<ArrayBuffer>;
  dy: Float32Array<ArrayBuffer>;
};

function makeCase(s: GroupNormShape, seed: number): Case {
  const total = s.batch * s.pixels * s.channels;
  // An offset mean so the variance is not trivially centred.
  const x = testData(total, seed).map((v, i) => 2 * v + 0.5 + (i % 5) * 0.1);
  return {
    x,
    gamma: testData(s.channels, seed + 1).map((v) => 1 + 0.5 * v),
    beta: testData(s.channels, seed + 2).map((v) => 0.3 * v),
    ss: testData(s.batch * 2 * s.channels, seed + 3).map((v) => 0.5 * v),
    dy: testData(total, seed + 4),
  };
}

async function checkKernels(
  s: GroupNormShape,
  options: GroupNormOptions,
  seed: number,
): Promise<void> {
  const c = makeCase(s, seed);
  const ss = options.scaleShift ? c.ss : undefined;
  const fwd = groupNormForward(s, options);
  const out = await runPasses(device(), fwd, {
    x: c.x,
    gamma: c.gamma,
    beta: c.beta,
    ...(ss ? { ss } : {}),
  });
  const ref = groupNormForwardRef({ ...c, ss }, s, options);
  const what = `${JSON.stringify(s)} ${JSON.stringify(options)}`;
  assertClose(out.y, ref.y, 1e-5, `y ${what}`);
  assertClose(out.stats, ref.stats, 1e-5, `stats ${what}`);

  const bwd = groupNormBackward(s, options);
  const g = await runPasses(device(), bwd, {
    dy: c.dy,
    x: c.x,
    gamma: c.gamma,
    beta: c.beta,
    stats: out.stats,
    ...(ss ? { ss } : {}),
  });
  const gr = groupNormBackwardRef({ ...c, ss }, s, options);
  assertClose(g.dx, gr.dx, 1e-5, `dx ${what}`);
  assertClose(g.dgamma, gr.dgamma, 1e-5, `dgamma ${what}`);
  assertClose(g.dbeta, gr.dbeta, 1e-5, `dbeta ${what}`);
  if (options.scaleShift) assertClose(g.dss, gr.dss!, 1e-5, `dss ${what}`);
  else assert.equal(g.dss, undefined);
}

Deno.test({
  name: "groupNorm kernels equal the references (6 channels in 3 groups and in 1, each epilogue)",
  ignore: noGpu,
  fn: async () => {
    const variants: GroupNormOptions[] = [
      {},
      { silu: true },
      { scaleShift: true },
      { silu: true, scaleShift: true },
    ];
    for (const [i, options] of variants.entries()) await checkKernels(SMALL, options, 10 + i);
    await checkKernels({ ...SMALL, groups: 1 }, { silu: true, scaleShift: true }, 20);
  },
});

Deno.test({
  name: "groupNorm kernels: chunked statistics, pixel chunks and channel tiles",
  ignore: noGpu,
  fn: async () => {
    // 13x17 pixels, 70 channels in 5 groups of 14: 3094 values a group (4 statistics chunks),
    // the backward's 64-channel tiles split group 4, 221 pixels make 4 pixel chunks.
    const s = { batch: 2, pixels: 13 * 17, channels: 70, groups: 5 };
    const passes = groupNormForward(s);
    assert.ok(Array.isArray(passes) && passes.length === 3);
    await checkKernels(s, { silu: true, scaleShift: true }, 30);
    // groups 1: 15470 values, 16 chunks.
    await checkKernels({ ...s, groups: 1 }, {}, 31);
  },
});

Deno.test({
  name: "groupNorm backward: accumulate adds to dx only, and the bytes repeat",
  ignore: noGpu,
  fn: async () => {
    const s = { batch: 2, pixels: 13 * 17, channels: 70, groups: 5 };
    const options = { silu: true, scaleShift: true };
    const c = makeCase(s, 40);
    const fwd = await runPasses(device(), groupNormForward(s, options), c);
    const fwd2 = await runPasses(device(), groupNormForward(s, options), c);
    assert.deepEqual(new Uint8Array(fwd2.y.buffer), new Uint8Array(fwd.y.buffer));
    assert.deepEqual(new Uint8Array(fwd2.stats.buffer), new Uint8Array(fwd.stats.buffer));
    const dx0 = testData(c.x.length, 41);
    const inputs = { ...c, stats: fwd.stats, dx: dx0 };
    const plain = await runPasses(device(), groupNormBackward(s, options), inputs);
    const again = await runPasses(device(), groupNormBackward(s, options), inputs);
    for (const k of ["dx", "dgamma", "dbeta", "dss", "tmp"]) {
      assert.deepEqual(new Uint8Array(again[k].buffer), new Uint8Array(plain[k].buffer), k);
    }
    assert.equal(plain.tmp.length, groupNormBackwardScratch(s));
    const acc = await runPasses(
      device(),
      groupNormBackward(s, { ...options, accumulate: true }),
      inputs,
    );
    assertClose(acc.dx, plain.dx.map((v, i) => v + dx0[i]), 1e-6, "accumulated dx");
    assert.deepEqual(acc.dgamma, plain.dgamma);
    assert.deepEqual(acc.dss, plain.dss);
  },
});

Deno.test("groupNormForwardRef equals tfjs groupNorm with the residual block's epilogue", () => {
  for (const groups of [3, 1]) {
    const s = { ...SMALL, groups };
    const c = makeCase(s, 50 + groups);
    const params: Record<string, tf.Tensor> = {
      "n.weight": tf.tensor1d(c.gamma),
      "n.bias": tf.tensor1d(c.beta),
    };
    const x = tf.tensor4d(c.x, [s.batch, 5, 7, s.channels]);
    const h = groupNorm(x, (name) => params[name], "n", groups);
    const ssT = tf.reshape(tf.tensor2d(c.ss, [s.batch, 2 * s.channels]), [s.batch, 1, 1, -1]);
    const [scale, shift] = tf.split(ssT, 2, 3);
    const fused = silu(tf.add(tf.mul(h, tf.add(scale, 1)), shift));
    assertClose(groupNormForwardRef(c, s).y, h.dataSync(), 1e-5, "plain");
    assertClose(
      groupNormForwardRef(c, s, { silu: true, scaleShift: true }).y,
      fused.dataSync(),
      1e-5,
      "fused",
    );
  }
});

Deno.test("groupNormBackwardRef equals central finite differences (float64)", () => {
  const s = { batch: 2, pixels: 5, channels: 6, groups: 3 };
  for (const options of [{ silu: true, scaleShift: true }, {}, { silu: true }]) {
    const c32 = makeCase(s, 60);
    const c = {
      x: Float64Array.from(c32.x),
      gamma: Float64Array.from(c32.gamma),
      beta: Float64Array.from(c32.beta),
      ss: options.scaleShift ? Float64Array.from(c32.ss) : undefined,
      dy: Float64Array.from(c32.dy),
    };
    const loss = (): number => {
      const { y } = groupNormForwardRef(c, s, options);
      return y.reduce((a, v, i) => a + v * c.dy[i], 0);
    };
    const grads = groupNormBackwardRef(c, s, options);
    const pairs: [Float64Array, Float64Array][] = [
      [c.x, grads.dx],
      [c.gamma, grads.dgamma],
      [c.beta, grads.dbeta],
    ];
    if (c.ss) pairs.push([c.ss, grads.dss!]);
    for (const [param, grad] of pairs) {
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
      assertClose(grad, fd, 1e-6, `gradient ${JSON.stringify(options)}`);
    }
  }
});
