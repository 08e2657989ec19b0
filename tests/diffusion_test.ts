import assert from "node:assert/strict";
import { tf } from "../src/tf.ts";
import { makeSchedule, terminalSignal } from "../src/diffusion/schedule.ts";
import { qSample } from "../src/diffusion/forward.ts";
import { ddpmStep, sampleDdpm } from "../src/diffusion/sampler.ts";
import { deriveRng } from "../src/rng.ts";
import { ScheduleSchema } from "../schemas/experiment.ts";

await tf.setBackend("cpu");

const linear = (timesteps: number) =>
  makeSchedule(ScheduleSchema.parse({ kind: "linear", timesteps }));

Deno.test("linear schedule matches closed-form values", () => {
  const s = linear(1000);
  assert.ok(Math.abs(s.betas[0] - 1e-4) < 1e-15);
  assert.ok(Math.abs(s.betas[999] - 0.02) < 1e-15);
  // ᾱ_T of the DDPM paper's schedule, computed independently as exp(Σ log(1 - β)).
  let logSum = 0;
  for (let i = 0; i < 1000; i++) logSum += Math.log(1 - (1e-4 + (0.02 - 1e-4) * i / 999));
  assert.ok(Math.abs(s.alphaBars[999] - Math.exp(logSum)) < 1e-12);
  assert.ok(Math.abs(s.alphaBars[999] - 4.04e-5) < 0.01e-5, `ᾱ_T = ${s.alphaBars[999]}`);
  // The notebook's T: √ᾱ_T ≈ 0.60 at T = 100 and ≈ 0.08 at T = 500.
  assert.ok(Math.abs(terminalSignal(linear(100)).sqrtAlphaBarT - 0.603) < 0.001);
  assert.ok(Math.abs(terminalSignal(linear(500)).sqrtAlphaBarT - 0.0797) < 0.001);
  // β̃ from its definition, and β̃_0 = 0.
  assert.equal(s.posteriorVariance[0], 0);
  const i = 500;
  const expected = s.betas[i] * (1 - s.alphaBars[i - 1]) / (1 - s.alphaBars[i]);
  assert.ok(Math.abs(s.posteriorVariance[i] - expected) < 1e-15);
  assert.deepEqual(Array.from(linear(1).betas), [1e-4]);
});

Deno.test("q(x_t | x_0) has mean √ᾱ_t x_0 and variance 1 - ᾱ_t", async () => {
  const s = linear(200);
  const n = 200_000;
  const t = 120;
  const x0 = tf.fill([n, 1, 1, 1], 0.7) as tf.Tensor4D;
  const noise = tf.tensor4d(deriveRng(3, "test").normal(n), [n, 1, 1, 1]);
  const xt = qSample(x0, noise, { schedule: s, steps: new Int32Array(n).fill(t) });
  const v = (await xt.data()) as Float32Array;
  let mean = 0;
  for (const a of v) mean += a / n;
  let variance = 0;
  for (const a of v) variance += (a - mean) ** 2 / n;
  const sd = Math.sqrt(1 - s.alphaBars[t]);
  assert.ok(
    Math.abs(mean - Math.sqrt(s.alphaBars[t]) * 0.7) < 5 * sd / Math.sqrt(n),
    `mean ${mean}`,
  );
  assert.ok(Math.abs(variance - (1 - s.alphaBars[t])) < 0.01, `variance ${variance}`);
  tf.dispose([x0, noise, xt]);
});

Deno.test("ddpmStep is the notebook's p_sample for both variances", async () => {
  const s = linear(50);
  const rng = deriveRng(4, "test");
  const x = rng.normal(6);
  const eps = rng.normal(6);
  const z = rng.normal(6);
  const i = 30;
  for (const variance of ["posterior", "beta"] as const) {
    const out = tf.tidy(() =>
      ddpmStep(tf.tensor4d(x, [1, 1, 2, 3]), tf.tensor4d(eps, [1, 1, 2, 3]), {
        schedule: s,
        index: i,
        variance,
        z: tf.tensor4d(z, [1, 1, 2, 3]),
      })
    );
    const got = (await out.data()) as Float32Array;
    out.dispose();
    const sigma2 = variance === "beta"
      ? s.betas[i]
      : s.betas[i] * (1 - s.alphaBars[i] / s.alphas[i]) / (1 - s.alphaBars[i]);
    for (let k = 0; k < 6; k++) {
      const mean = (x[k] - s.betas[i] * eps[k] / Math.sqrt(1 - s.alphaBars[i])) /
        Math.sqrt(s.alphas[i]);
      assert.ok(Math.abs(got[k] - (mean + Math.sqrt(sigma2) * z[k])) < 1e-5);
    }
  }
});

Deno.test("with an oracle ε and no step noise, DDPM sampling returns x_0", async () => {
  const s = linear(100);
  const shape: [number, number, number, number] = [2, 4, 4, 3];
  const x0Data = deriveRng(5, "x0").normal(96).map((v) => Math.tanh(v));
  const x0 = tf.tensor4d(x0Data, shape);
  // The true noise of x_t given x_0: ε = (x_t - √ᾱ_t x_0) / √(1 - ᾱ_t).
  const oracle = (xt: tf.Tensor4D, t: tf.Tensor1D) => {
    const i = t.dataSync()[0];
    return tf.div(
      tf.sub(xt, tf.mul(x0, Math.sqrt(s.alphaBars[i]))),
      Math.sqrt(1 - s.alphaBars[i]),
    ) as tf.Tensor4D;
  };
  const out = await sampleDdpm(oracle, s, {
    shape,
    flags: { variance: "posterior", initialNoise: "gaussian", stepNoise: false },
    rng: deriveRng(6, "sample"),
  });
  const got = (await out.data()) as Float32Array;
  let maxDiff = 0;
  for (let k = 0; k < got.length; k++) maxDiff = Math.max(maxDiff, Math.abs(got[k] - x0Data[k]));
  assert.ok(maxDiff < 1e-4, `max |x̂0 - x0| = ${maxDiff}`);
  tf.dispose([x0, out]);
});

Deno.test("sampler flags: zero x_T without step noise is deterministic; step noise depends on the seed", async () => {
  const s = linear(20);
  const shape: [number, number, number, number] = [1, 2, 2, 3];
  const denoise = (x: tf.Tensor4D) => tf.mul(x, 0.1) as tf.Tensor4D;
  const run = async (
    seed: number,
    flags: { initialNoise: "gaussian" | "zeros"; stepNoise: boolean },
  ) => {
    const out = await sampleDdpm(denoise, s, {
      shape,
      flags: { variance: "posterior", ...flags },
      rng: deriveRng(seed, "s"),
    });
    const v = Array.from(await out.data());
    out.dispose();
    return v;
  };
  const zeros = { initialNoise: "zeros" as const, stepNoise: false };
  assert.deepEqual(await run(1, zeros), await run(2, zeros));
  assert.ok((await run(1, zeros)).every((v) => v === 0), "x_T = 0 with ε̂ ∝ x stays at 0");
  const noisy = { initialNoise: "zeros" as const, stepNoise: true };
  assert.notDeepEqual(await run(1, noisy), await run(2, noisy));
  assert.deepEqual(await run(1, noisy), await run(1, noisy));
  const before = tf.memory().numTensors;
  await run(3, { initialNoise: "gaussian", stepNoise: true });
  assert.equal(tf.memory().numTensors, before, "no tensor leaks across sampling steps");
});
