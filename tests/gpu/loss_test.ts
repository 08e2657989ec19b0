/**
 * The training objective on the GPU: q_sample and the targets against src/diffusion, the loss
 * and its gradient against src/train/loss.ts (values and tfjs gradients), finite differences,
 * the two-pass reduction on the adapter, its ring slot, and its bytes being the same twice.
 */
import assert from "node:assert/strict";
import { LossSchema } from "../../schemas/experiment.ts";
import { gatherCoefficients, qSample as tfQSample } from "../../src/diffusion/forward.ts";
import { scheduleFromBetas } from "../../src/diffusion/schedule.ts";
import { noiseLevels, trainingTarget } from "../../src/diffusion/targets.ts";
import {
  diffusionTarget,
  diffusionTargetRef,
  LOSS_PARTIALS,
  lossForward,
  lossForwardRef,
  type LossShape,
  qSample,
  qSampleCoefficients,
  qSampleRef,
  type TargetKind,
} from "../../src/gpu/kernels/loss.ts";
import { runKernel } from "../../src/gpu/testing.ts";
import { lossValue } from "../../src/train/loss.ts";
import { tf } from "../../src/tf.ts";
import { assertClose, device, noGpu, testData } from "./device.ts";
import { f64, numericGradient } from "./finite_differences.ts";

await tf.setBackend("cpu");

const T = 1000;
const schedule = scheduleFromBetas(
  Float64Array.from({ length: T }, (_, i) => 1e-4 + (0.02 - 1e-4) * (i / (T - 1))),
);
const steps = Int32Array.from([0, 999, 417]);
/** A batch of 3 examples of 5x7x3. */
const SHAPE = { batch: 3, size: 105 };
const DIMS: [number, number, number, number] = [3, 5, 7, 3];
const x0 = testData(315, 1);
const noise = testData(315, 2);
const coef = qSampleCoefficients(schedule, steps);

function tfValues(t: tf.Tensor): Float32Array {
  const v = t.dataSync() as Float32Array;
  t.dispose();
  return v;
}

Deno.test("q_sample and targets: references vs src/diffusion", () => {
  const a = tfValues(gatherCoefficients(schedule.alphaBars, steps, Math.sqrt));
  const s = tfValues(gatherCoefficients(schedule.alphaBars, steps, (v) => Math.sqrt(1 - v)));
  assert.deepEqual(coef, Float32Array.from([a[0], s[0], a[1], s[1], a[2], s[2]]));
  const want = tfValues(
    tf.tidy(() => tfQSample(tf.tensor4d(x0, DIMS), tf.tensor4d(noise, DIMS), { schedule, steps })),
  );
  assertClose(qSampleRef({ x0, noise, coef }, SHAPE).xt, want, 1e-7, "q_sample");
  for (const prediction of ["eps", "x0", "v"] as const) {
    const target = tfValues(
      tf.tidy(() =>
        trainingTarget(tf.tensor4d(x0, DIMS), tf.tensor4d(noise, DIMS), {
          prediction,
          level: noiseLevels(schedule, steps),
        })
      ),
    );
    const ref = diffusionTargetRef({ x0, noise, coef }, { ...SHAPE, target: prediction });
    assertClose(ref.target, target, 1e-7, `target ${prediction}`);
  }
});

Deno.test({
  name: "q_sample and target kernels match their references",
  ignore: noGpu,
  fn: async () => {
    const { xt } = await runKernel(device(), qSample(SHAPE), { x0, noise, coef });
    assertClose(xt, qSampleRef({ x0, noise, coef }, SHAPE).xt, 1e-6, "xt");
    for (const kind of ["eps", "x0", "v"] as TargetKind[]) {
      const spec = diffusionTarget({ ...SHAPE, target: kind });
      const all = { x0, noise, coef };
      const inputs = Object.fromEntries(
        spec.bindings.filter((b) => b.access === "read").map((b) => [b.name, all[b.name as "x0"]]),
      );
      const { target } = await runKernel(device(), spec, inputs);
      const ref = diffusionTargetRef(all, { ...SHAPE, target: kind }).target;
      assertClose(target, ref, kind === "v" ? 1e-6 : 0, `target ${kind}`);
    }
  },
});

const CASES: { name: string; config: Record<string, unknown>; shape: Omit<LossShape, "n"> }[] = [
  { name: "l1", config: { kind: "l1" }, shape: { kind: "l1" } },
  { name: "l2", config: { kind: "l2" }, shape: { kind: "l2" } },
  { name: "huber", config: { kind: "huber" }, shape: { kind: "huber" } },
  {
    name: "huber 0.3",
    config: { kind: "huber", delta: 0.3 },
    shape: { kind: "huber", delta: 0.3 },
  },
];

/** pred with some entries equal to target (d = 0, where l1's gradient is tfjs's -1/n). */
function lossData(
  n: number,
  seed: number,
): { pred: Float32Array<ArrayBuffer>; target: Float32Array<ArrayBuffer> } {
  const pred = testData(n, seed).map((v) => 2 * v);
  const target = testData(n, seed + 1);
  for (let i = 0; i < n; i += 17) pred[i] = target[i];
  return { pred, target };
}

Deno.test("loss reference vs src/train/loss.ts (values and tfjs gradients) and finite differences", () => {
  const n = 103;
  const { pred, target } = lossData(n, 3);
  for (const { name, config, shape } of CASES) {
    const ref = lossForwardRef({ pred, target }, { n, ...shape });
    const cfg = LossSchema.parse(config);
    const value = tfValues(lossValue(tf.tensor1d(pred), tf.tensor1d(target), cfg))[0];
    assert.ok(Math.abs(ref.loss - value) < 1e-6, `${name}: ${ref.loss} vs ${value}`);
    const t = tf.tensor1d(target);
    const grad = tfValues(tf.grad((p: tf.Tensor) => lossValue(p, t, cfg))(tf.tensor1d(pred)));
    t.dispose();
    assertClose(ref.dpred, grad, 1e-7, `${name} gradient vs tfjs`);
    // Finite differences away from the kinks (d = 0, |d| = delta).
    const p64 = f64(pred).map((v, i) => i % 17 === 0 ? v + 0.01 : v);
    const numeric = numericGradient(
      (x) => ({
        loss: Float64Array.of(lossForwardRef({ pred: x.pred, target }, { n, ...shape }).loss),
      }),
      { pred: p64 },
      { seeds: { loss: Float64Array.of(1) }, wrt: "pred" },
    );
    assertClose(lossForwardRef({ pred: p64, target }, { n, ...shape }).dpred, numeric, 1e-8, name);
  }
  // l1 at d = 0: -1/n, as tfjs's abs gradient step(d, -1).
  assert.equal(lossForwardRef({ pred: [1], target: [1] }, { n: 1, kind: "l1" }).dpred[0], -1);
  const weighted = lossForwardRef({ pred, target }, { n, kind: "l2", weight: 0.25 });
  const plain = lossForwardRef({ pred, target }, { n, kind: "l2" });
  assert.ok(Math.abs(weighted.loss - plain.loss / 4) < 1e-15);
});

/** Runs both passes of `lossForward`; returns the loss ring, dpred and the partials. */
async function runLoss(
  shape: LossShape,
  inputs: {
    pred: Float32Array<ArrayBuffer>;
    target: Float32Array<ArrayBuffer>;
    dpred?: Float32Array<ArrayBuffer>;
  },
  options: {
    ring: number;
    slot: number;
    weight?: number;
    perThread?: number;
    accumulate?: boolean;
  },
): Promise<{ loss: Float32Array; dpred: Float32Array; tmp: Float32Array; groups: number }> {
  const [partials, finish] = lossForward(shape, options);
  const first = await runKernel(device(), partials, inputs);
  const ring = Float32Array.from({ length: options.ring }, (_, i) => 100 + i);
  const second = await runKernel(device(), finish, {
    tmp: first.tmp as Float32Array<ArrayBuffer>,
    slot: Uint32Array.of(options.slot),
    loss: ring,
  });
  return { loss: second.loss, dpred: first.dpred, tmp: first.tmp, groups: partials.workgroups[0] };
}

Deno.test({
  name: "loss kernels: every kind, the ring slot, accumulate and weight",
  ignore: noGpu,
  fn: async () => {
    const n = 1001;
    const { pred, target } = lossData(n, 5);
    for (const { name, shape } of CASES) {
      const full = { n, ...shape };
      const ref = lossForwardRef({ pred, target }, full);
      const out = await runLoss(full, { pred, target }, { ring: 4, slot: 6 });
      assert.deepEqual(Array.from(out.loss).filter((_, i) => i !== 2), [100, 101, 103]);
      assertClose([out.loss[2]], [ref.loss], 1e-6, `${name} loss`);
      assertClose(out.dpred, ref.dpred, 1e-6, `${name} dpred`);
    }
    // accumulate adds to dpred; weight scales the loss and its gradient.
    const prev = testData(n, 7);
    const ref = lossForwardRef({ pred, target }, { n, kind: "huber", weight: 0.25 });
    const out = await runLoss({ n, kind: "huber" }, { pred, target, dpred: prev }, {
      ring: 1,
      slot: 0,
      weight: 0.25,
      accumulate: true,
    });
    assertClose([out.loss[0]], [ref.loss], 1e-6, "weighted loss");
    assertClose(out.dpred, Array.from(ref.dpred, (v, i) => v + prev[i]), 1e-6, "dpred +=");
  },
});

Deno.test({
  name: "loss reduction over the most partials is exact-ish and the same bytes twice",
  ignore: noGpu,
  fn: async () => {
    const n = 300_007;
    const { pred, target } = lossData(n, 9);
    const shape: LossShape = { n, kind: "l2" };
    const options = { ring: 3, slot: 1, perThread: 1 };
    const a = await runLoss(shape, { pred, target }, options);
    assert.equal(a.groups, LOSS_PARTIALS);
    const ref = lossForwardRef({ pred, target }, shape);
    assertClose([a.loss[1]], [ref.loss], 1e-5, "loss");
    assertClose(a.dpred, ref.dpred, 1e-5, "dpred");
    const b = await runLoss(shape, { pred, target }, options);
    const bytes = (x: Float32Array) => new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
    assert.deepEqual(bytes(b.loss), bytes(a.loss));
    assert.deepEqual(bytes(b.tmp), bytes(a.tmp));
    assert.deepEqual(bytes(b.dpred), bytes(a.dpred));
  },
});

Deno.test("loss builders validate their options", () => {
  assert.throws(() => lossForward({ n: 0, kind: "l1" }), RangeError);
  assert.throws(() => lossForward({ n: 5, kind: "huber", delta: 0 }), RangeError);
  assert.throws(() => lossForward({ n: 5, kind: "l2" }, { ring: 0 }), RangeError);
  const [first, second] = lossForward({ n: 5000, kind: "l2" });
  assert.equal(first.bindings.find((b) => b.name === "tmp")?.length, Math.ceil(5000 / 1024));
  assert.deepEqual(second.bindings.map((b) => b.name), ["tmp", "slot", "loss"]);
});
