/**
 * `backend: "webgpu"` end to end on the adapter (llvmpipe in CI): the tiny experiment trains and
 * samples on the compiled engine, the same bytes twice; its checkpoint samples through ONNX
 * Runtime to the same pictures; a checkpoint trained on tfjs loads into the engine, which then
 * computes the network tfjs computes.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadExperiment } from "../../src/config/mod.ts";
import { decodePng } from "../../src/io/image.ts";
import { resampleRun } from "../../src/run/resample.ts";
import { RunSession } from "../../src/run/session.ts";
import { tf } from "../../src/tf.ts";
import { generate } from "../../src/diffusion/generate.ts";
import { guidedDenoiser } from "../../src/diffusion/guidance.ts";
import { deriveRng } from "../../src/rng.ts";
import { experimentFile, runFile, TEST_CACHE, TINY, TINY_COND } from "../helpers.ts";
import { noGpu } from "./device.ts";

const WEBGPU = {
  ...TINY,
  name: "tiny-webgpu",
  backend: "webgpu",
  optimizer: { ema: { decay: 0.9 } },
};

Deno.test({
  name: "backend webgpu: trains and samples on the engine, the same bytes twice, " +
    "and its checkpoint samples through ONNX Runtime to the same pictures",
  ignore: noGpu,
  fn: async () => {
    const file = await experimentFile(WEBGPU);
    const a = await runFile(file);
    assert.equal(a.manifest.status, "complete");
    const backend = a.manifest.backend as Record<string, unknown>;
    assert.equal(backend.engine, "webgpu");
    const gpu = backend.gpu as Record<string, number>;
    assert.ok(gpu.trainDispatches > 100 && gpu.predictDispatches > 50, JSON.stringify(gpu));
    assert.ok(gpu.peakBytes > 0);
    const b = await runFile(file);
    assert.deepEqual(b.manifest.artifacts, a.manifest.artifacts);
    // The same checkpoint sampled by ONNX Runtime: the same noise, the network within float
    // rounding, so the 8-bit pictures agree to within one level.
    const onnx = await resampleRun(a.dir, {
      sets: ["sampler.engine=onnxruntime"],
      log: () => {},
    });
    const mine = await decodePng(await Deno.readFile(join(a.dir, "samples.png")));
    const theirs = await decodePng(await Deno.readFile(join(onnx.dir!, "samples.png")));
    assert.deepEqual([theirs.width, theirs.height], [mine.width, mine.height]);
    let worst = 0;
    for (let i = 0; i < mine.data.length; i++) {
      worst = Math.max(worst, Math.abs(mine.data[i] - theirs.data[i]));
    }
    assert.ok(worst <= 1, `samples differ by ${worst} levels`);
  },
});

Deno.test({
  name: "backend webgpu: a checkpoint trained on tfjs loads into the engine (EMA weights)",
  ignore: noGpu,
  fn: async () => {
    const trained = await runFile(await experimentFile({ ...WEBGPU, backend: "wasm" }));
    const checkpoint = join(trained.dir, "checkpoint");
    const open = async (backend: string) =>
      await RunSession.open(
        await loadExperiment(join(trained.dir, "config.json"), { sets: [`backend=${backend}`] }),
        { purpose: "sample", checkpoint, cacheDir: TEST_CACHE },
      );
    await using wasm = await open("wasm");
    await using webgpu = await open("webgpu");
    assert.equal(webgpu.backend.engine, "webgpu");
    const x = tf.randomNormal([3, 8, 8, 3], 0, 1, "float32", 4) as tf.Tensor4D;
    const t = tf.tensor1d([0, 3, 7]);
    const want = await (await wasm.denoiser()(x, t) as tf.Tensor).data();
    const got = await webgpu.denoiser()(x, t) as Float32Array;
    assert.equal(got.length, want.length);
    let worst = 0;
    for (let i = 0; i < got.length; i++) {
      worst = Math.max(worst, Math.abs(got[i] - want[i]) / Math.max(1, Math.abs(want[i])));
    }
    assert.ok(worst <= 1e-4, `engine and tfjs differ by ${worst}`);
    tf.dispose([x, t]);
  },
});

Deno.test({
  name: "backend webgpu: sampling equals the tfjs sampler for the same noise " +
    "(DDPM with both variances, DDIM, guidance)",
  ignore: noGpu,
  fn: async () => {
    const trained = await runFile(await experimentFile({ ...TINY_COND, backend: "wasm" }));
    const checkpoint = join(trained.dir, "checkpoint");
    const open = async (backend: string) =>
      await RunSession.open(
        await loadExperiment(join(trained.dir, "config.json"), { sets: [`backend=${backend}`] }),
        { purpose: "sample", checkpoint, cacheDir: TEST_CACHE },
      );
    await using wasm = await open("wasm");
    await using webgpu = await open("webgpu");
    const labels = new Int32Array([0, 1, 1, 0, 1, 1, 0, 0]); // 4 examples x 2 attributes
    const samplers = [
      { kind: "ddpm", variance: "posterior", initialNoise: "gaussian", stepNoise: true, eta: 0 },
      { kind: "ddpm", variance: "beta", initialNoise: "gaussian", stepNoise: true, eta: 0 },
      { kind: "ddim", steps: 4, eta: 0.5, variance: "posterior", initialNoise: "gaussian" },
    ] as const;
    for (const sampler of samplers) {
      for (const w of [0, 3]) {
        const sample = async (session: RunSession) => {
          const pair = {
            conditional: session.denoiser({ labels }),
            unconditional: session.denoiser(),
          };
          const x = await generate(guidedDenoiser(pair, w), session.schedule, {
            shape: [4, 8, 8, 3],
            sampler: { stepNoise: true, ...sampler },
            rng: deriveRng(7, "tests/webgpu/sample"),
          });
          const values = await x.data();
          x.dispose();
          return values;
        };
        const want = await sample(wasm);
        const got = await sample(webgpu);
        let worst = 0;
        for (let i = 0; i < got.length; i++) {
          worst = Math.max(worst, Math.abs(got[i] - want[i]) / Math.max(1, Math.abs(want[i])));
        }
        assert.ok(worst <= 1e-4, `${sampler.kind} ${sampler.variance} w=${w}: ${worst}`);
      }
    }
  },
});
