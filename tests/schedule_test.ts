import assert from "node:assert/strict";
import {
  cosineAlphaBar,
  describeSchedule,
  makeSchedule,
  type Schedule,
  scheduleBetas,
  terminalSignal,
} from "../src/diffusion/schedule.ts";
import { type ScheduleConfig, ScheduleSchema } from "../schemas/experiment.ts";

const parse = (section: Record<string, unknown>): ScheduleConfig => ScheduleSchema.parse(section);

Deno.test("linear with scaleWithT multiplies both ends by 1000 / T (Improved DDPM)", () => {
  const plain = makeSchedule(parse({ kind: "linear", timesteps: 1000 }));
  const scaled1000 = makeSchedule(parse({ kind: "linear", timesteps: 1000, scaleWithT: true }));
  assert.deepEqual(scaled1000.betas, plain.betas, "T = 1000 is unchanged");
  const s = makeSchedule(parse({ kind: "linear", timesteps: 250, scaleWithT: true }));
  assert.ok(Math.abs(s.betas[0] - 4e-4) < 1e-15);
  assert.ok(Math.abs(s.betas[249] - 0.08) < 1e-15);
  // Scaling keeps ᾱ_T near the T = 1000 value (Σβ = 10.05 either way): log ᾱ_T -10.32 vs -10.12.
  const logT = (x: Schedule) => Math.log(terminalSignal(x).alphaBarT);
  assert.ok(Math.abs(logT(s) - logT(plain)) < 0.25, `${logT(s)} vs ${logT(plain)}`);
  assert.deepEqual(parse({ kind: "linear" }), {
    kind: "linear",
    timesteps: 200,
    betaStart: 1e-4,
    betaEnd: 0.02,
    scaleWithT: false,
  });
});

Deno.test("cosine: ᾱ at t = T/2 is f(T/2) / f(0), betas clipped at 0.999", () => {
  for (const T of [1000, 200, 4000]) {
    const s = makeSchedule(parse({ kind: "cosine", timesteps: T }));
    // Independent formula: f(t) = cos²((t/T + s) / (1 + s) · π/2), s = 0.008.
    const f = (t: number) => Math.cos(((t / T + 0.008) / 1.008) * (Math.PI / 2)) ** 2;
    const half = T / 2;
    // Index i stands for t = i + 1, so ᾱ at t = T/2 is alphaBars[T/2 - 1].
    assert.ok(
      Math.abs(s.alphaBars[half - 1] - f(half) / f(0)) < 1e-6,
      `T=${T}: ${s.alphaBars[half - 1]} vs ${f(half) / f(0)}`,
    );
    assert.ok(Math.abs(cosineAlphaBar(half, { timesteps: T, s: 0.008 }) - f(half) / f(0)) < 1e-15);
    assert.equal(s.betas[T - 1], 0.999, "the last beta is clipped");
    assert.ok(s.betas.every((b) => b > 0 && b <= 0.999));
    for (let i = 1; i < T; i++) assert.ok(s.betas[i] >= s.betas[i - 1], "betas increase");
  }
  const s = makeSchedule(parse({ kind: "cosine", timesteps: 1000, maxBeta: 0.5 }));
  assert.equal(Math.max(...s.betas), 0.5);
});

Deno.test("quadratic and sigmoid match the reference code's formulas", () => {
  const T = 300;
  const [start, end] = [1e-4, 0.02];
  const quadratic = scheduleBetas(parse({ kind: "quadratic", timesteps: T }));
  const sigmoid = scheduleBetas(parse({ kind: "sigmoid", timesteps: T }));
  for (let i = 0; i < T; i++) {
    // quadratic = linspace(sqrt(start), sqrt(end), T) ** 2
    const q = (Math.sqrt(start) + (Math.sqrt(end) - Math.sqrt(start)) * i / (T - 1)) ** 2;
    assert.ok(Math.abs(quadratic[i] - q) < 1e-15, `quadratic[${i}]`);
    // sigmoid = sigmoid(linspace(-6, 6, T)) * (end - start) + start
    const x = -6 + 12 * i / (T - 1);
    const g = (1 / (1 + Math.exp(-x))) * (end - start) + start;
    assert.ok(Math.abs(sigmoid[i] - g) < 1e-15, `sigmoid[${i}]`);
  }
  assert.ok(Math.abs(quadratic[0] - start) < 1e-15 && Math.abs(quadratic[T - 1] - end) < 1e-15);
  // sigmoid(±6) does not reach the ends exactly.
  assert.ok(sigmoid[0] > start && sigmoid[T - 1] < end);
});

Deno.test("every kind works for T = 1 and T = 4000 and derives finite tables", () => {
  for (const kind of ["linear", "cosine", "quadratic", "sigmoid"]) {
    for (const timesteps of [1, 2, 4000]) {
      const s = makeSchedule(parse({ kind, timesteps }));
      assert.equal(s.betas.length, timesteps);
      assert.ok(s.betas.every((b) => b > 0 && b < 1), `${kind} T=${timesteps} betas`);
      assert.ok(s.alphaBars.every((a) => a > 0 && a < 1));
      assert.ok(s.posteriorVariance.every(Number.isFinite));
      assert.equal(s.posteriorVariance[0], 0);
      assert.equal(s.alphaBarsPrev[0], 1);
    }
  }
  assert.deepEqual(Array.from(scheduleBetas(parse({ kind: "quadratic", timesteps: 1 }))), [1e-4]);
});

Deno.test("schema: kinds, defaults and cross-field checks of the schedule", () => {
  assert.deepEqual(parse({ kind: "cosine" }), {
    kind: "cosine",
    timesteps: 200,
    s: 0.008,
    maxBeta: 0.999,
  });
  assert.throws(() => parse({ kind: "cosine", betaStart: 0.1 }), /betaStart/);
  assert.throws(() => parse({ kind: "linear", timesteps: 4001 }));
  assert.equal(
    describeSchedule(parse({ kind: "linear", timesteps: 100 })),
    "linear, T=100, beta 0.0001 -> 0.02",
  );
  assert.match(describeSchedule(parse({ kind: "cosine" })), /^cosine, T=200, s 0.008/);
});
