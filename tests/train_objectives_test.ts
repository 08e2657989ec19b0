import assert from "node:assert/strict";
import { tf } from "../src/tf.ts";
import { huber, lossValue } from "../src/train/loss.ts";
import { learningRate } from "../src/train/lr.ts";
import { clipByGlobalNorm } from "../src/train/clip.ts";
import { Ema, emaDecay } from "../src/train/ema.ts";
import { LossSchema, OptimizerSchema } from "../schemas/experiment.ts";

await tf.setBackend("cpu");

Deno.test("losses: l1, l2 and huber (smooth L1) against their definitions", () => {
  const d = [-3, -1, -0.5, 0, 0.25, 0.999, 1.5, 4];
  const target = tf.zeros([8]);
  const pred = tf.tensor1d(d);
  const value = (section: Record<string, unknown>) => {
    const v = lossValue(pred, target, LossSchema.parse(section));
    const out = v.dataSync()[0];
    v.dispose();
    return out;
  };
  const mean = (f: (x: number) => number) => d.reduce((s, x) => s + f(x), 0) / d.length;
  assert.ok(Math.abs(value({ kind: "l1" }) - mean(Math.abs)) < 1e-6);
  assert.ok(Math.abs(value({ kind: "l2" }) - mean((x) => x * x)) < 1e-6);
  // PyTorch smooth_l1_loss(beta=1) = huber_loss(delta=1): 0.5 x² if |x| < 1 else |x| - 0.5.
  const smoothL1 = (x: number) => Math.abs(x) < 1 ? 0.5 * x * x : Math.abs(x) - 0.5;
  assert.ok(Math.abs(value({ kind: "huber" }) - mean(smoothL1)) < 1e-6);
  const delta = 0.5;
  const h = (x: number) => Math.abs(x) <= delta ? 0.5 * x * x : delta * (Math.abs(x) - 0.5 * delta);
  assert.ok(Math.abs(value({ kind: "huber", delta }) - mean(h)) < 1e-6);
  // The gradient of huber is clip(d, -delta, delta).
  const g = tf.grad((x: tf.Tensor) => tf.sum(huber(x, { delta })))(pred);
  assert.deepEqual(
    Array.from(g.dataSync(), (x) => x + 0), // -0 -> 0
    d.map((x) => Math.max(-delta, Math.min(delta, x))),
  );
  assert.deepEqual(LossSchema.parse({ kind: "huber" }), { kind: "huber", delta: 1 });
  assert.throws(() => LossSchema.parse({ kind: "l1", delta: 1 }));
  tf.dispose([target, pred, g]);
});

Deno.test("learning rate: linear warmup, then constant or cosine decay to minLr", () => {
  const base = OptimizerSchema.parse({ lr: 2e-4 });
  assert.equal(base.warmupSteps, 0);
  assert.equal(base.lrDecay, "none");
  for (const k of [1, 10, 100000]) assert.equal(learningRate(k, { ...base, totalSteps: 10 }), 2e-4);
  const warm = { ...OptimizerSchema.parse({ lr: 2e-4, warmupSteps: 5000 }), totalSteps: 100000 };
  assert.ok(Math.abs(learningRate(1, warm) - 2e-4 / 5000) < 1e-20);
  assert.ok(Math.abs(learningRate(2500, warm) - 1e-4) < 1e-18);
  assert.equal(learningRate(5000, warm), 2e-4);
  assert.equal(learningRate(90000, warm), 2e-4);
  const cos = {
    ...OptimizerSchema.parse({ lr: 1e-3, warmupSteps: 100, lrDecay: "cosine", minLr: 1e-5 }),
    totalSteps: 1100,
  };
  assert.equal(learningRate(50, cos), 5e-4);
  assert.equal(learningRate(100, cos), 1e-3);
  // Half way through the decay: (lr + minLr) / 2.
  assert.ok(Math.abs(learningRate(600, cos) - (1e-3 + 1e-5) / 2) < 1e-15);
  assert.ok(Math.abs(learningRate(1100, cos) - 1e-5) < 1e-15);
  assert.ok(Math.abs(learningRate(5000, cos) - 1e-5) < 1e-15, "clamped after the last step");
  const quarter = 1e-5 + (1e-3 - 1e-5) * (1 + Math.cos(Math.PI / 4)) / 2;
  assert.ok(Math.abs(learningRate(350, cos) - quarter) < 1e-15);
  for (let k = 101; k <= 1100; k++) {
    assert.ok(learningRate(k, cos) <= learningRate(k - 1, cos), "decays monotonically");
  }
});

Deno.test("clipByGlobalNorm is torch.nn.utils.clip_grad_norm_", () => {
  const a = [3, 0, -4];
  const b = [[12]];
  const grads = { a: tf.tensor1d(a), b: tf.tensor2d(b) };
  // ‖g‖ = √(9 + 16 + 144) = 13.
  const clipped = clipByGlobalNorm(grads, 6.5);
  assert.ok(Math.abs(clipped.norm.dataSync()[0] - 13) < 1e-5);
  const scale = 6.5 / (13 + 1e-6);
  const got = [...clipped.grads.a.dataSync(), ...clipped.grads.b.dataSync()];
  [3, 0, -4, 12].forEach((v, i) => assert.ok(Math.abs(got[i] - v * scale) < 1e-5));
  const loose = clipByGlobalNorm(grads, 100);
  assert.deepEqual(Array.from(loose.grads.a.dataSync()), a, "below the norm: unchanged");
  assert.deepEqual(Array.from(loose.grads.b.dataSync()), [12]);
  tf.dispose([
    grads.a,
    grads.b,
    clipped.norm,
    ...Object.values(clipped.grads),
    loose.norm,
    ...Object.values(loose.grads),
  ]);
});

Deno.test("EMA decay warms up as min(decay, (1 + j) / (10 + j)), j = steps after startStep - 1", () => {
  assert.equal(emaDecay(1, { decay: 0.9999, startStep: 0 }), 0.1);
  assert.equal(emaDecay(91, { decay: 0.9999, startStep: 0 }), 0.91);
  assert.equal(emaDecay(3, { decay: 0.9, startStep: 2 }), 0.1);
  assert.equal(emaDecay(100_000, { decay: 0.9999, startStep: 0 }), 0.9999);
  assert.equal(emaDecay(1_000, { decay: 0.9, startStep: 500 }), 0.9);
});

Deno.test("EMA: copy up to startStep, then d · ema + (1 - d) · w; state round trip", async () => {
  const w = new Map<string, tf.Variable>([
    ["p", tf.variable(tf.tensor1d([1, 2]))],
    ["q", tf.variable(tf.scalar(-1))],
  ]);
  const ema = new Ema(w, { decay: 0.9, startStep: 2 });
  const value = (name: string) => Array.from(ema.params.get(name)!.dataSync());
  assert.deepEqual(value("p"), [1, 2], "starts as a copy");
  w.get("p")!.assign(tf.tensor1d([3, 4]));
  ema.update(w, 1);
  assert.deepEqual(value("p"), [3, 4]);
  w.get("p")!.assign(tf.tensor1d([5, 6]));
  ema.update(w, 2);
  assert.deepEqual(value("p"), [5, 6], "still a copy at startStep");
  w.get("p")!.assign(tf.tensor1d([15, 16]));
  w.get("q")!.assign(tf.scalar(9));
  ema.update(w, 3);
  const p = value("p");
  // First averaged step: d = min(0.9, 1 / 10) = 0.1.
  assert.ok(
    Math.abs(p[0] - (0.1 * 5 + 0.9 * 15)) < 1e-5 && Math.abs(p[1] - (0.1 * 6 + 0.9 * 16)) < 1e-5,
  );
  assert.ok(Math.abs(value("q")[0] - (0.1 * -1 + 0.9 * 9)) < 1e-5);
  assert.equal(ema.step, 3);
  const state = await ema.exportState();
  assert.deepEqual([...state.tensors.keys()], ["p", "q"]);
  const other = new Ema(w, { decay: 0.9, startStep: 2 });
  other.importState(state);
  assert.deepEqual(Array.from(other.params.get("p")!.dataSync()), p);
  assert.equal(other.step, 3);
  assert.throws(() => other.importState({ step: 0, tensors: new Map() }), /no p/);
  const before = tf.memory().numTensors;
  ema.update(w, 4);
  assert.equal(tf.memory().numTensors, before, "updates leak no tensors");
  [ema, other].forEach((e) => e.dispose());
  w.forEach((v) => v.dispose());
});
