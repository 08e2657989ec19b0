import assert from "node:assert/strict";
import { tf } from "../src/tf.ts";
import { makeSchedule, type Schedule, terminalSignal } from "../src/diffusion/schedule.ts";
import { qSample } from "../src/diffusion/forward.ts";
import {
  ddpmStep,
  ddpmStepFromX0,
  type Denoiser,
  posteriorCoefficients,
  posteriorMean,
} from "../src/diffusion/ddpm.ts";
import { ddimSigma, ddimTimesteps, ddimVisited } from "../src/diffusion/ddim.ts";
import { generate, sampleDdim, sampleDdpm, visitedTimesteps } from "../src/diffusion/generate.ts";
import { recover, recoveryGridImages } from "../src/diffusion/recovery.ts";
import {
  interpretOutput,
  noiseLevelAt,
  noiseLevels,
  trainingTarget,
} from "../src/diffusion/targets.ts";
import { evenlySpaced, trajectoryPlan, TrajectoryRecorder } from "../src/diffusion/trajectory.ts";
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

// ---------------------------------------------------------------------------------------------
// Prediction targets, the posterior, DDIM, recovery and trajectories (issue 5).

type Prediction = "eps" | "x0" | "v";
const PREDICTIONS: Prediction[] = ["eps", "x0", "v"];
type Shape4 = [number, number, number, number];

async function values(x: tf.Tensor): Promise<Float32Array> {
  return (await x.data()) as Float32Array;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let k = 0; k < a.length; k++) m = Math.max(m, Math.abs(a[k] - b[k]));
  return m;
}

/** The network a perfect model would be: the true target of x_t for the known x_0. */
function oracleDenoiser(x0: tf.Tensor4D, s: Schedule, prediction: Prediction): Denoiser {
  return (xt, t) => {
    const i = t.dataSync()[0];
    const a = Math.sqrt(s.alphaBars[i]);
    const sd = Math.sqrt(1 - s.alphaBars[i]);
    const eps = tf.div(tf.sub(xt, tf.mul(x0, a)), sd) as tf.Tensor4D;
    if (prediction === "eps") return eps;
    if (prediction === "x0") return tf.clone(x0);
    return tf.sub(tf.mul(eps, a), tf.mul(x0, sd)) as tf.Tensor4D;
  };
}

function cleanImages(seed: number, shape: Shape4): { data: Float32Array; x0: tf.Tensor4D } {
  const data = deriveRng(seed, "x0").normal(shape.reduce((a, b) => a * b, 1)).map(Math.tanh);
  return { data, x0: tf.tensor4d(data, shape) };
}

Deno.test("posterior mean and variance of q(x_{t-1} | x_t, x_0) match Bayes' rule", async () => {
  const rng = deriveRng(11, "posterior");
  for (const config of [{ kind: "linear", timesteps: 50 }, { kind: "cosine", timesteps: 50 }]) {
    const s = makeSchedule(ScheduleSchema.parse(config));
    for (const i of [0, 1, 17, 49]) {
      const x0 = rng.normal(12);
      const xt = rng.normal(12);
      const mean = tf.tidy(() =>
        posteriorMean(tf.tensor4d(x0, [1, 2, 2, 3]), tf.tensor4d(xt, [1, 2, 2, 3]), {
          schedule: s,
          index: i,
        })
      );
      const got = await values(mean);
      mean.dispose();
      if (i === 0) {
        // x_{t-1} = x_0 is known exactly at the last step.
        assert.equal(s.posteriorVariance[0], 0);
        assert.ok(maxAbsDiff(got, x0) < 1e-6);
        continue;
      }
      // Product of q(x_{t-1} | x_0) = N(√ᾱ_{t-1} x_0, 1 - ᾱ_{t-1}) and
      // q(x_t | x_{t-1}) = N(√α_t x_{t-1}, β_t), as a density of x_{t-1}.
      const prevVar = 1 - s.alphaBarsPrev[i];
      const precision = 1 / prevVar + s.alphas[i] / s.betas[i];
      const variance = 1 / precision;
      assert.ok(Math.abs(s.posteriorVariance[i] - variance) < 1e-12 * Math.max(1, variance));
      const expected = x0.map((v, k) =>
        variance *
        (Math.sqrt(s.alphaBarsPrev[i]) * v / prevVar + Math.sqrt(s.alphas[i]) * xt[k] / s.betas[i])
      );
      assert.ok(maxAbsDiff(got, expected) < 1e-5, `${config.kind} i=${i}`);
      const c = posteriorCoefficients(s, i);
      assert.ok(Math.abs(c.x0 - variance * Math.sqrt(s.alphaBarsPrev[i]) / prevVar) < 1e-12);
    }
  }
});

Deno.test("ddpmStepFromX0 with x̂_0 from ε̂ is the notebook's ε step", async () => {
  const s = linear(50);
  const rng = deriveRng(12, "x0-step");
  const [x, eps, z] = [rng.normal(12), rng.normal(12), rng.normal(12)];
  for (const i of [0, 5, 49]) {
    for (const variance of ["posterior", "beta"] as const) {
      const [a, b] = tf.tidy(() => {
        const xt = tf.tensor4d(x, [1, 2, 2, 3]);
        const e = tf.tensor4d(eps, [1, 2, 2, 3]);
        const step = { schedule: s, index: i, variance, z: tf.tensor4d(z, [1, 2, 2, 3]) };
        const { x0 } = interpretOutput(e, xt, { prediction: "eps", level: noiseLevelAt(s, i) });
        return [ddpmStep(xt, e, step), ddpmStepFromX0(xt, x0, step)];
      });
      assert.ok(maxAbsDiff(await values(a), await values(b)) < 1e-4, `i=${i} ${variance}`);
      tf.dispose([a, b]);
    }
  }
});

Deno.test("targets: trainingTarget and interpretOutput invert each other for eps, x0 and v", async () => {
  const s = linear(100);
  const shape: Shape4 = [4, 2, 2, 3];
  const { x0 } = cleanImages(13, shape);
  const noise = tf.tensor4d(deriveRng(13, "noise").normal(48), shape);
  const steps = Int32Array.from([0, 9, 50, 99]);
  const level = noiseLevels(s, steps);
  const xt = qSample(x0, noise, { schedule: s, steps });
  for (const prediction of PREDICTIONS) {
    const target = trainingTarget(x0, noise, { prediction, level });
    const out = interpretOutput(target, xt, { prediction, level });
    assert.ok(maxAbsDiff(await values(out.eps), await values(noise)) < 1e-4, prediction);
    assert.ok(maxAbsDiff(await values(out.x0), await values(x0)) < 1e-5, prediction);
    // (the eps and x0 targets are the inputs themselves: dispose only what was made here)
    tf.dispose([target, out.eps, out.x0].filter((u) => u !== noise && u !== x0));
  }
  // v = √ᾱ ε - √(1 - ᾱ) x_0, element by element.
  const v = await values(trainingTarget(x0, noise, { prediction: "v", level }));
  const [x0v, nv] = [await values(x0), await values(noise)];
  for (let k = 0; k < 48; k++) {
    const i = steps[Math.floor(k / 12)];
    const expected = Math.sqrt(s.alphaBars[i]) * nv[k] - Math.sqrt(1 - s.alphaBars[i]) * x0v[k];
    assert.ok(Math.abs(v[k] - expected) < 1e-6);
  }
  // clipX0: x̂_0 in [-1, 1] and ε̂ recomputed so that x_t = √ᾱ x̂_0 + √(1 - ᾱ) ε̂ still holds.
  const big = tf.mul(x0, 3) as tf.Tensor4D;
  const clipped = interpretOutput(big, xt, { prediction: "x0", level, clipX0: true });
  const cx = await values(clipped.x0);
  assert.ok(cx.every((u) => u >= -1 && u <= 1));
  const back = tf.add(tf.mul(clipped.x0, level.signal), tf.mul(clipped.eps, level.noise));
  assert.ok(maxAbsDiff(await values(back), await values(xt)) < 1e-5);
  tf.dispose([x0, noise, level.signal, level.noise, xt, big, clipped.x0, clipped.eps, back]);
});

Deno.test("with an oracle and no step noise, DDPM returns x_0 for every target, clipX0 or not", async () => {
  const s = linear(100);
  const shape: Shape4 = [2, 4, 4, 3];
  const { data, x0 } = cleanImages(5, shape);
  for (const prediction of PREDICTIONS) {
    for (const clipX0 of [false, true]) {
      for (const variance of ["posterior", "beta"] as const) {
        const out = await sampleDdpm(oracleDenoiser(x0, s, prediction), s, {
          shape,
          flags: { variance, initialNoise: "gaussian", stepNoise: false, clipX0 },
          prediction,
          rng: deriveRng(6, "sample"),
        });
        const diff = maxAbsDiff(await values(out), data);
        out.dispose();
        assert.ok(diff < 1e-4, `${prediction} clip=${clipX0} ${variance}: ${diff}`);
      }
    }
  }
  x0.dispose();
});

Deno.test("ddimTimesteps: trailing subsequence ending at T - 1", () => {
  const tau = ddimTimesteps(1000, 50);
  assert.equal(tau.length, 50);
  assert.equal(tau[0], 19);
  assert.equal(tau[49], 999);
  for (let k = 1; k < 50; k++) assert.equal(tau[k] - tau[k - 1], 20);
  assert.deepEqual(Array.from(ddimTimesteps(10, 10)), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.deepEqual(Array.from(ddimTimesteps(10, 3)), [2, 6, 9]);
  assert.deepEqual(Array.from(ddimTimesteps(1000, 1)), [999]);
  for (const [T, S] of [[1000, 300], [7, 6], [4000, 999]]) {
    const t = ddimTimesteps(T, S);
    assert.equal(t.length, S);
    for (let k = 1; k < S; k++) assert.ok(t[k] > t[k - 1], `T=${T} S=${S} strictly increasing`);
    assert.equal(t[S - 1], T - 1);
  }
  assert.throws(() => ddimTimesteps(10, 11), RangeError);
  assert.throws(() => ddimTimesteps(10, 0), RangeError);
  assert.deepEqual(ddimVisited(10, 3), [10, 7, 3, 0]);
  assert.deepEqual(visitedTimesteps({ kind: "ddim", steps: 3 }, 10), [10, 7, 3, 0]);
  assert.deepEqual(visitedTimesteps({ kind: "ddpm" }, 3), [3, 2, 1, 0]);
});

Deno.test("with an oracle, DDIM with eta 0 returns x_0 for every target (T = 1000 in 50 steps)", async () => {
  const shape: Shape4 = [2, 4, 4, 3];
  const { data, x0 } = cleanImages(7, shape);
  const cases: [Schedule, number][] = [
    [linear(1000), 50],
    [linear(100), 100],
    [linear(100), 7],
    [makeSchedule(ScheduleSchema.parse({ kind: "cosine", timesteps: 1000 })), 50],
  ];
  for (const [s, steps] of cases) {
    for (const prediction of PREDICTIONS) {
      const out = await sampleDdim(oracleDenoiser(x0, s, prediction), s, {
        shape,
        flags: { initialNoise: "gaussian", stepNoise: true, eta: 0, steps },
        prediction,
        rng: deriveRng(8, "ddim"),
      });
      const diff = maxAbsDiff(await values(out), data);
      out.dispose();
      assert.ok(diff < 1e-4, `T=${s.timesteps} steps=${steps} ${prediction}: ${diff}`);
    }
  }
  x0.dispose();
});

Deno.test("DDIM with eta 1 on every step is DDPM with the posterior variance", async () => {
  const s = linear(30);
  const shape: Shape4 = [2, 2, 2, 3];
  const denoise: Denoiser = (x, t) => tf.mul(tf.tanh(tf.add(x, tf.reshape(t, [-1, 1, 1, 1]))), 0.7);
  const ddpm = await sampleDdpm(denoise, s, {
    shape,
    flags: { variance: "posterior", initialNoise: "gaussian", stepNoise: true },
    rng: deriveRng(9, "same"),
  });
  const ddim = await sampleDdim(denoise, s, {
    shape,
    flags: { initialNoise: "gaussian", stepNoise: true, eta: 1 },
    rng: deriveRng(9, "same"),
  });
  const diff = maxAbsDiff(await values(ddpm), await values(ddim));
  assert.ok(diff < 1e-4, `max difference ${diff}`);
  assert.ok(
    Math.abs(
      ddimSigma(s.alphaBars[10], s.alphaBars[9], { eta: 1 }) ** 2 - s.posteriorVariance[10],
    ) < 1e-15,
  );
  tf.dispose([ddpm, ddim]);
});

Deno.test("DDIM: eta 0 ignores the step noise; eta > 0 uses it; no tensor leaks", async () => {
  const s = linear(40);
  const shape: Shape4 = [1, 2, 2, 3];
  const denoise: Denoiser = (x) => tf.mul(x, 0.2);
  const run = async (seed: number, eta: number) => {
    const out = await sampleDdim(denoise, s, {
      shape,
      flags: { initialNoise: "zeros", stepNoise: true, eta, steps: 8 },
      rng: deriveRng(seed, "ddim"),
    });
    const v = Array.from(await values(out));
    out.dispose();
    return v;
  };
  assert.deepEqual(await run(1, 0), await run(2, 0));
  assert.notDeepEqual(await run(1, 0.5), await run(2, 0.5));
  assert.deepEqual(await run(1, 0.5), await run(1, 0.5));
  const before = tf.memory().numTensors;
  await run(3, 1);
  assert.equal(tf.memory().numTensors, before);
});

Deno.test("recovery: with an oracle every t returns x_0 with both variances", async () => {
  const s = linear(60);
  const shape: Shape4 = [3, 2, 2, 3];
  const { data, x0 } = cleanImages(14, shape);
  for (const prediction of PREDICTIONS) {
    for (const stepNoise of [false, true]) {
      const rows = await recover(oracleDenoiser(x0, s, prediction), s, {
        x0,
        t: [1, 10, 60],
        rng: deriveRng(15, "recovery"),
        stepNoise,
        prediction,
      });
      assert.deepEqual(rows.map((r) => r.t), [1, 10, 60]);
      for (const row of rows) {
        assert.deepEqual(row.original, data);
        assert.ok(maxAbsDiff(row.beta, data) < 1e-4, `${prediction} t=${row.t} beta`);
        assert.ok(maxAbsDiff(row.posterior, data) < 1e-4, `${prediction} t=${row.t} posterior`);
      }
      // x_t is q(x_t | x_0) with the first draws of the generator.
      const eps = deriveRng(15, "recovery").normal(data.length);
      const a = Math.sqrt(s.alphaBars[0]);
      const sd = Math.sqrt(1 - s.alphaBars[0]);
      assert.ok(maxAbsDiff(rows[0].noised, data.map((v, k) => a * v + sd * eps[k])) < 1e-6);
    }
  }
  x0.dispose();
});

Deno.test("recovery: the variances share the step noise; grid order; no leaks", async () => {
  const s = linear(20);
  const shape: Shape4 = [2, 1, 1, 3];
  const { x0 } = cleanImages(16, shape);
  const denoise: Denoiser = (x) => tf.mul(x, 0.3);
  const before = tf.memory().numTensors;
  const run = () => recover(denoise, s, { x0, t: [5, 20], rng: deriveRng(17, "recovery") });
  const rows = await run();
  assert.equal(tf.memory().numTensors, before, "no tensor leaks");
  assert.deepEqual(rows, await run(), "deterministic");
  // Same z: at the first reverse step both runs start from the same x_t and differ by
  // (σ_β - σ_β̃) z only; the results differ but stay close.
  assert.notDeepEqual(rows[1].beta, rows[1].posterior);
  const grid = recoveryGridImages(rows, { count: 2 });
  assert.equal(grid.length, 2 * 2 * 4 * 3);
  // Row 1 (t = 5, image 1): original | noised | beta | posterior.
  assert.deepEqual(grid.subarray(12, 15), rows[0].original.subarray(3, 6));
  assert.deepEqual(grid.subarray(15, 18), rows[0].noised.subarray(3, 6));
  assert.deepEqual(grid.subarray(18, 21), rows[0].beta.subarray(3, 6));
  assert.deepEqual(grid.subarray(21, 24), rows[0].posterior.subarray(3, 6));
  x0.dispose();
});

Deno.test("generate: one entry point; callbacks see every visited t; trajectory recorder", async () => {
  const s = linear(20);
  const shape: Shape4 = [3, 2, 2, 3];
  const denoise: Denoiser = (x) => tf.mul(x, 0.1);
  for (const sampler of [{ kind: "ddpm" as const }, { kind: "ddim" as const, steps: 6 }]) {
    const visited = visitedTimesteps(sampler, s.timesteps);
    const plan = trajectoryPlan(visited, { frames: 4, gifFrames: 100 });
    assert.equal(plan.strip[0], 20);
    assert.equal(plan.strip[plan.strip.length - 1], 0);
    assert.equal(plan.strip.length, 4);
    assert.deepEqual(plan.gif, visited, "more GIF frames than states: every state once");
    const recorder = new TrajectoryRecorder(plan, { count: 2 });
    const seen: number[] = [];
    const out = await generate(denoise, s, {
      shape,
      sampler: {
        variance: "posterior",
        initialNoise: "gaussian",
        stepNoise: true,
        eta: 0,
        ...sampler,
      },
      rng: deriveRng(18, "generate"),
      onStart: async (t, x) => {
        seen.push(t);
        await recorder.record(t, x);
      },
      onStep: async (t, x) => {
        seen.push(t);
        await recorder.record(t, x);
      },
    });
    assert.deepEqual(seen, visited);
    const strip = recorder.strip();
    assert.equal(strip.length, 4);
    assert.equal(strip[0].length, 2 * 12, "the first 2 samples");
    assert.deepEqual(strip[3], (await values(out)).slice(0, 24), "the last frame is the sample");
    out.dispose();
  }
  // `at` picks the first visited state at or below each t.
  assert.deepEqual(
    trajectoryPlan([10, 7, 3, 0], { frames: 2, gifFrames: 0, at: [10, 8, 5, 0] }),
    { strip: [10, 7, 3, 0], gif: [] },
  );
  assert.deepEqual(evenlySpaced([5, 4, 3, 2, 1, 0], 3), [5, 2, 0]);
});

Deno.test("one loop: a denoiser returning values (ONNX-style) samples the same; progress counts steps", async () => {
  const s = linear(12);
  const shape: Shape4 = [2, 2, 2, 3];
  const denoise: Denoiser = (x, t) =>
    tf.tidy(() => tf.mul(tf.tanh(tf.add(x, tf.reshape(t, [-1, 1, 1, 1]))), 0.3));
  const asValues: Denoiser = async (x, t) => {
    const out = denoise(x, t) as tf.Tensor4D;
    const data = (await out.data()) as Float32Array;
    out.dispose();
    return data;
  };
  for (
    const sampler of [
      { kind: "ddpm", variance: "beta", initialNoise: "gaussian", stepNoise: true, eta: 0 },
      {
        kind: "ddim",
        variance: "posterior",
        initialNoise: "gaussian",
        stepNoise: true,
        eta: 0.5,
        steps: 5,
      },
    ] as const
  ) {
    const progress: string[] = [];
    const before = tf.memory().numTensors;
    const a = await generate(denoise, s, { shape, sampler, rng: deriveRng(3, "loop") });
    const b = await generate(asValues, s, {
      shape,
      sampler,
      rng: deriveRng(3, "loop"),
      onStart: (t, _x, p) => void progress.push(`${t}:${p.step}/${p.steps}`),
      onStep: (t, _x, p) => void progress.push(`${t}:${p.step}/${p.steps}`),
    });
    assert.deepEqual(await values(a), await values(b));
    tf.dispose([a, b]);
    assert.equal(tf.memory().numTensors, before);
    const visited = visitedTimesteps(sampler, 12);
    const steps = visited.length - 1;
    assert.deepEqual(progress, visited.map((t, k) => `${t}:${k}/${steps}`));
  }
});
