/**
 * The sampling kernels (src/gpu/kernels/sampler.ts): the references against the tfjs step rules
 * of src/diffusion (DDPM with both variances, DDIM, every prediction target, clipX0, no step
 * noise; guidance), each kernel against its reference at an odd size, and whole reverse
 * processes run on the GPU as the engine runs them (hyper per step, z drawn on the host)
 * against src/diffusion/generate.ts.
 */
import assert from "node:assert/strict";
import { ScheduleSchema } from "../../schemas/experiment.ts";
import { ddimTimesteps } from "../../src/diffusion/ddim.ts";
import { generate, type GenerateFlags } from "../../src/diffusion/generate.ts";
import { guidanceMix, guidedDenoiser } from "../../src/diffusion/guidance.ts";
import { ddpmRule } from "../../src/diffusion/sampler.ts";
import { ddimRule } from "../../src/diffusion/ddim.ts";
import { makeSchedule } from "../../src/diffusion/schedule.ts";
import type { Prediction } from "../../src/diffusion/targets.ts";
import type { KernelSpec } from "../../src/gpu/kernel.ts";
import {
  DDIM_HYPER_LENGTH,
  ddimHyper,
  ddimStep,
  ddimStepRef,
  DDPM_HYPER_LENGTH,
  ddpmHyper,
  ddpmStep,
  ddpmStepRef,
  guidanceCombine,
  guidanceCombineRef,
  guidanceHyper,
  samplerPlan,
  samplerStep,
  type StepKernelOptions,
} from "../../src/gpu/kernels/sampler.ts";
import { runKernel } from "../../src/gpu/testing.ts";
import { deriveRng } from "../../src/rng.ts";
import { tf } from "../../src/tf.ts";
import { assertClose, device, noGpu, testData } from "./device.ts";
import { KernelSequence } from "./sequence.ts";

await tf.setBackend("cpu");

const SHAPE: [number, number, number, number] = [3, 5, 7, 3];
const N = SHAPE.reduce((a, b) => a * b, 1);
const schedule = makeSchedule(ScheduleSchema.parse({ kind: "linear", timesteps: 50 }));
const PREDICTIONS: Prediction[] = ["eps", "x0", "v"];

// x_t and a model output large enough that x̂_0 leaves [-1, 1] (so clipX0 clips).
const xt = testData(N, 1).map((v) => v * 1.5);
const output = testData(N, 2).map((v) => v * 2);
const z = testData(N, 3);

/** A tfjs step rule's next state on the test's x_t, output and z (null: no step noise). */
function tfjsStep(
  rule: ReturnType<typeof ddpmRule>,
  at: { index: number; prevIndex: number; noise: boolean },
): Float32Array {
  return tf.tidy(() =>
    rule.step(tf.tensor4d(output, SHAPE), tf.tensor4d(xt, SHAPE), {
      index: at.index,
      prevIndex: at.prevIndex,
      z: at.noise ? tf.tensor4d(z, SHAPE) : null,
    }).dataSync() as Float32Array
  );
}

Deno.test("ddpmHyper and ddimHyper hold the schedule's coefficients", () => {
  const i = 37;
  const h = ddpmHyper(schedule, { index: i, variance: "beta" });
  assert.equal(h.length, DDPM_HYPER_LENGTH);
  const ab = schedule.alphaBars[i];
  const expected = [
    schedule.betas[i] / Math.sqrt(1 - ab),
    Math.sqrt(1 - schedule.betas[i]),
    Math.sqrt(ab),
    Math.sqrt(1 - ab),
    Math.sqrt(schedule.alphaBars[i - 1]) * schedule.betas[i] / (1 - ab),
    Math.sqrt(1 - schedule.betas[i]) * (1 - schedule.alphaBars[i - 1]) / (1 - ab),
    Math.sqrt(schedule.betas[i]),
    0,
  ];
  assertClose(h, expected.map(Math.fround), 1e-7, "ddpm hyper");
  assert.equal(
    ddpmHyper(schedule, { index: i, variance: "posterior" })[6],
    Math.fround(Math.sqrt(schedule.posteriorVariance[i])),
  );
  assert.equal(ddpmHyper(schedule, { index: 0, variance: "beta" })[6], 0);
  const d = ddimHyper(schedule, { index: 40, prevIndex: 20, eta: 1 });
  assert.equal(d.length, DDIM_HYPER_LENGTH);
  const [a1, a0] = [schedule.alphaBars[40], schedule.alphaBars[20]];
  const sigma = Math.sqrt((1 - a0) / (1 - a1) * (1 - a1 / a0));
  assertClose(
    d,
    [
      Math.sqrt(a1),
      Math.sqrt(1 - a1),
      Math.sqrt(a0),
      Math.sqrt(1 - a0 - sigma ** 2),
      sigma,
      0,
      0,
      0,
    ]
      .map(Math.fround),
    1e-7,
    "ddim hyper",
  );
  // After the last step ᾱ' = 1: x' = x̂_0, no noise.
  assert.deepEqual([...ddimHyper(schedule, { index: 4, prevIndex: -1, eta: 1 })].slice(2, 5), [
    1,
    0,
    0,
  ]);
});

Deno.test("the DDPM step references equal ddpmRule (both variances, every target, clipX0)", () => {
  let clipped = 0;
  for (const prediction of PREDICTIONS) {
    for (const clipX0 of [false, true]) {
      for (const variance of ["posterior", "beta"] as const) {
        for (const [index, stepNoise] of [[37, true], [0, true], [37, false]] as const) {
          const rule = ddpmRule(schedule, { flags: { variance, stepNoise, clipX0 }, prediction });
          const expected = tfjsStep(rule, { index, prevIndex: index - 1, noise: stepNoise });
          const options: StepKernelOptions = { prediction, clipX0, stepNoise };
          const ref = ddpmStepRef(
            { xt, eps: output, ...(stepNoise ? { z } : {}) },
            ddpmHyper(schedule, { index, variance }),
            options,
          );
          assertClose(
            ref,
            expected,
            1e-6,
            `ddpm ${prediction} clip ${clipX0} ${variance} i ${index}`,
          );
          if (clipX0) {
            const free = ddpmStepRef(
              { xt, eps: output, z },
              ddpmHyper(schedule, { index, variance }),
              {
                prediction,
              },
            );
            clipped += ref.some((v, k) => v !== free[k]) ? 1 : 0;
          }
        }
      }
    }
  }
  assert.ok(clipped > 0, "clipX0 changed nothing");
});

Deno.test("the DDIM step references equal ddimRule (every target, clipX0, eta 0.5, last step)", () => {
  const tau = Array.from(ddimTimesteps(50, 7)).reverse();
  for (const prediction of PREDICTIONS) {
    for (const clipX0 of [false, true]) {
      for (const [k, stepNoise] of [[2, true], [6, true], [2, false]] as const) {
        const index = tau[k];
        const prevIndex = k + 1 < tau.length ? tau[k + 1] : -1;
        const flags = { initialNoise: "gaussian" as const, stepNoise, eta: 0.5, clipX0 };
        const rule = ddimRule(schedule, { flags, prediction });
        const noise = rule.drawsNoise(index, prevIndex);
        const expected = tfjsStep(rule, { index, prevIndex, noise });
        const ref = ddimStepRef(
          { xt, eps: output, ...(stepNoise ? { z } : {}) },
          ddimHyper(schedule, { index, prevIndex, eta: 0.5 }),
          { prediction, clipX0, stepNoise },
        );
        assertClose(ref, expected, 1e-6, `ddim ${prediction} clip ${clipX0} step ${k}`);
      }
    }
  }
});

Deno.test("guidanceCombineRef equals guidanceMix", () => {
  for (const w of [0, 1.5, 7]) {
    const expected = tf.tidy(() =>
      guidanceMix({ conditional: tf.tensor(xt), unconditional: tf.tensor(output) }, w).dataSync()
    );
    assertClose(
      guidanceCombineRef({ cond: xt, uncond: output }, guidanceHyper(w)),
      expected,
      1e-6,
      `w ${w}`,
    );
  }
});

Deno.test({
  name: "the step and guidance kernels equal their references (odd size), the same bytes twice",
  ignore: noGpu,
  fn: async () => {
    const cases: {
      spec: KernelSpec;
      ref: Float32Array;
      inputs: Record<string, Float32Array<ArrayBuffer>>;
    }[] = [];
    for (const prediction of PREDICTIONS) {
      for (const clipX0 of [false, true]) {
        for (const stepNoise of prediction === "eps" && !clipX0 ? [true, false] : [true]) {
          const options = { prediction, clipX0, stepNoise };
          const inputs = { xt, eps: output, ...(stepNoise ? { z } : {}) };
          const dh = ddpmHyper(schedule, { index: 21, variance: "posterior" });
          cases.push({
            spec: ddpmStep({ n: N }, options),
            ref: ddpmStepRef(inputs, dh, options),
            inputs: { ...inputs, hyper: dh },
          });
          const ih = ddimHyper(schedule, { index: 21, prevIndex: 13, eta: 0.7 });
          cases.push({
            spec: ddimStep({ n: N }, options),
            ref: ddimStepRef(inputs, ih, options),
            inputs: { ...inputs, hyper: ih },
          });
        }
      }
    }
    const gh = guidanceHyper(2.5);
    cases.push({
      spec: guidanceCombine(N),
      ref: guidanceCombineRef({ cond: xt, uncond: output }, gh),
      inputs: { cond: xt, uncond: output, hyper: gh },
    });
    assert.equal(cases.length, 15);
    for (const { spec, ref, inputs } of cases) {
      const { out } = await runKernel(device(), spec, inputs);
      assertClose(out, ref, 1e-6, spec.name);
    }
    const [first, second] = [cases[2], cases[2]];
    const a = await runKernel(device(), first.spec, first.inputs);
    const b = await runKernel(device(), second.spec, second.inputs);
    assert.deepEqual(new Uint8Array(a.out.buffer), new Uint8Array(b.out.buffer));
  },
});

/** `spec` with some bindings bound to other buffer names. */
function renameBinding(spec: KernelSpec, names: Record<string, string>): KernelSpec {
  return { ...spec, bindings: spec.bindings.map((b) => ({ ...b, name: names[b.name] ?? b.name })) };
}

/**
 * A whole reverse process on the GPU: the "network" is guidance's mix of x itself and a fixed
 * array (ε̂ = (1 + w) x - w c), then the step kernel; x ping-pongs between two buffers.
 */
async function gpuProcess(
  sampler: GenerateFlags,
  options: { prediction: Prediction; w: number; c: Float32Array<ArrayBuffer>; seed: number },
): Promise<Float32Array> {
  const plan = samplerPlan(schedule, { sampler, prediction: options.prediction });
  const step = samplerStep({ n: N }, { sampler, prediction: options.prediction });
  const guide = guidanceCombine(N);
  const parity = [
    { from: "xa", to: "xb" },
    { from: "xb", to: "xa" },
  ].map(({ from, to }) => [
    renameBinding(guide, { cond: from, uncond: "c", hyper: "hyper_w", out: "eps" }),
    renameBinding(step, { xt: from, hyper: "hyper_step", out: to }),
  ]);
  const seq = new KernelSequence(device(), parity.flat());
  const rng = deriveRng(options.seed, "sample/noise");
  seq.write("xa", rng.normal(N) as Float32Array<ArrayBuffer>);
  seq.write("c", options.c);
  seq.write("hyper_w", guidanceHyper(options.w));
  for (const [k, s] of plan.entries()) {
    if (s.drawsNoise) seq.write("z", rng.normal(N) as Float32Array<ArrayBuffer>);
    seq.write("hyper_step", s.hyper);
    await seq.run(parity[k % 2]);
  }
  const out = await seq.read(plan.length % 2 === 0 ? "xa" : "xb");
  seq.destroy();
  return out;
}

/** The same process with src/diffusion/generate.ts. */
async function tfjsProcess(
  sampler: GenerateFlags,
  options: { prediction: Prediction; w: number; c: Float32Array<ArrayBuffer>; seed: number },
): Promise<Float32Array> {
  const denoise = guidedDenoiser({
    conditional: (x) => tf.clone(x),
    unconditional: () => tf.tensor4d(options.c, SHAPE),
  }, options.w);
  const x = await generate(denoise, schedule, {
    shape: SHAPE,
    sampler,
    prediction: options.prediction,
    rng: deriveRng(options.seed, "sample/noise"),
  });
  const out = x.dataSync() as Float32Array;
  x.dispose();
  return out;
}

Deno.test({
  name: "whole reverse processes on the GPU (samplerPlan, hyper per step) equal generate",
  ignore: noGpu,
  fn: async () => {
    const c = testData(N, 5);
    const runs: { sampler: GenerateFlags; prediction: Prediction }[] = [
      {
        sampler: {
          kind: "ddpm",
          variance: "posterior",
          initialNoise: "gaussian",
          stepNoise: true,
          eta: 0,
        },
        prediction: "eps",
      },
      {
        sampler: {
          kind: "ddpm",
          variance: "beta",
          initialNoise: "gaussian",
          stepNoise: true,
          eta: 0,
          clipX0: true,
        },
        prediction: "x0",
      },
      {
        sampler: {
          kind: "ddim",
          variance: "posterior",
          initialNoise: "gaussian",
          stepNoise: true,
          eta: 0.5,
          steps: 6,
          clipX0: true,
        },
        prediction: "v",
      },
    ];
    for (const { sampler, prediction } of runs) {
      const options = { prediction, w: 0.5, c, seed: 11 };
      const expected = await tfjsProcess(sampler, options);
      const gpu = await gpuProcess(sampler, options);
      assertClose(gpu, expected, 1e-5, `${sampler.kind} ${prediction}`);
      assert.ok(expected.every(Number.isFinite));
    }
    // The plan draws as the rules do: ddpm at every index but 0, ddim where σ > 0.
    const ddpm = samplerPlan(schedule, { sampler: runs[0].sampler });
    assert.equal(ddpm.length, 50);
    assert.deepEqual(ddpm.map((s) => s.drawsNoise), ddpm.map((s) => s.index > 0));
    const ddim = samplerPlan(schedule, { sampler: runs[2].sampler });
    assert.deepEqual(ddim.map((s) => s.index), Array.from(ddimTimesteps(50, 6)).reverse());
    assert.deepEqual(ddim.map((s) => s.drawsNoise), [true, true, true, true, true, false]);
    // Deterministic DDIM needs no z at all.
    const eta0 = { ...runs[2].sampler, eta: 0 };
    assert.ok(samplerPlan(schedule, { sampler: eta0 }).every((s) => !s.drawsNoise));
    assert.ok(!samplerStep({ n: N }, { sampler: eta0 }).bindings.some((b) => b.name === "z"));
    assert.ok(
      samplerStep({ n: N }, { sampler: runs[2].sampler }).bindings.some((b) => b.name === "z"),
    );
  },
});
