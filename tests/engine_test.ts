/**
 * `sampler.engine: "onnxruntime"`: runs that sample through ONNX Runtime, their determinism,
 * agreement with tfjs, the cached model.onnx, and the fallback when the package cannot load.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { experimentFile, ROOT, runFile, TINY, TINY_COND } from "./helpers.ts";
import { readManifest } from "../src/run/manifest.ts";
import { decodePng } from "../src/io/image.ts";
import { decodeSafetensors } from "../src/io/safetensors.ts";
import { createModel, importParams } from "../src/model/mod.ts";
import { createSamplingEngine, exportCheckpoint } from "../src/onnx/mod.ts";
import { decodeModel } from "../src/onnx/graph.ts";
import { generate } from "../src/diffusion/generate.ts";
import { makeSchedule } from "../src/diffusion/schedule.ts";
import { deriveRng } from "../src/rng.ts";
import { tf } from "../src/tf.ts";
import { type Experiment, ExperimentSchema } from "../schemas/experiment.ts";

const ORT_TINY = {
  ...TINY,
  sampler: {
    ...TINY.sampler,
    engine: "onnxruntime",
    trajectory: { count: 2, frames: 4, gifFrames: 3 },
  },
  recovery: { count: 2, t: [4, 8] },
};

Deno.test("onnxruntime runs: manifest records the engine, same seed gives the same bytes", async () => {
  const file = await experimentFile(ORT_TINY);
  const a = await runFile(file);
  const b = await runFile(file);
  assert.equal(a.status, "complete");
  const ma = (await readManifest(a.dir))!;
  const mb = (await readManifest(b.dir))!;
  assert.equal(ma.engine?.requested, "onnxruntime");
  assert.equal(ma.engine?.name, "onnxruntime");
  assert.ok(["cpu", "cuda", "webgpu"].includes(String(ma.engine?.executionProvider)));
  assert.equal(ma.engine?.model, "checkpoint/model.onnx");
  for (const f of ["samples.png", "trajectory.png", "trajectory.gif", "recovery.png"]) {
    assert.ok(ma.artifacts[f], `${f} written`);
  }
  assert.ok(ma.artifacts["checkpoint/model.onnx"], "model.onnx is an artifact of the run");
  assert.deepEqual(ma.artifacts, mb.artifacts);

  // The same training sampled with tfjs: the training cache reuses a's checkpoint (not its
  // model.onnx), and the pictures agree to within one grey level.
  const c = await runFile(file, { outRoot: join(a.dir, "../.."), sets: ["sampler.engine=tfjs"] });
  const mc = (await readManifest(c.dir))!;
  assert.equal(mc.engine?.name, "tfjs");
  assert.ok(mc.reusedTraining, "the training was reused");
  assert.equal(mc.artifacts["checkpoint/model.onnx"], undefined);
  assert.equal(
    mc.artifacts["checkpoint/model.safetensors"],
    ma.artifacts["checkpoint/model.safetensors"],
  );
  for (const f of ["samples.png", "recovery.png"]) {
    const pa = await decodePng(await Deno.readFile(join(a.dir, f)));
    const pc = await decodePng(await Deno.readFile(join(c.dir, f)));
    let most = 0;
    for (let i = 0; i < pa.data.length; i++) {
      most = Math.max(most, Math.abs(pa.data[i] - pc.data[i]));
    }
    assert.ok(most <= 1, `${f}: engines differ by ${most} grey levels`);
  }
});

Deno.test("ddpm and ddim through onnxruntime equal tfjs within 1e-4; model.onnx is cached", async () => {
  const run = await runFile(await experimentFile(TINY));
  const config: Experiment = ExperimentSchema.parse(
    JSON.parse(await Deno.readTextFile(join(run.dir, "config.json"))),
  );
  const checkpointDir = join(run.dir, "checkpoint");
  const model = createModel(config.model, { rng: deriveRng(0, "unused") });
  importParams(
    model,
    decodeSafetensors(await Deno.readFile(join(checkpointDir, "model.safetensors"))).tensors,
  );
  const tfjs = (x: tf.Tensor4D, t: tf.Tensor1D) => tf.tidy(() => model.predict(x, t));
  const ortConfig = { ...config, sampler: { ...config.sampler, engine: "onnxruntime" as const } };
  const logs: string[] = [];
  const engine = await createSamplingEngine(ortConfig, {
    tfjs: () => tfjs,
    tfjsBackend: "wasm",
    checkpointDir,
    size: 8,
    log: (l) => logs.push(l),
  });
  assert.equal(engine.info.name, "onnxruntime");
  assert.match(logs.join("\n"), /exported checkpoint\/model\.onnx/);
  const schedule = makeSchedule(config.schedule);
  for (const kind of ["ddpm", "ddim"] as const) {
    const sampler = { ...config.sampler, kind, steps: kind === "ddim" ? 4 : undefined, eta: 0.5 };
    const sample = async (denoise: typeof tfjs | typeof engine.denoise) => {
      const x = await generate(denoise, schedule, {
        shape: [3, 8, 8, 3],
        sampler,
        rng: deriveRng(5, "sample/noise"),
      });
      const data = (await x.data()) as Float32Array;
      x.dispose();
      return data;
    };
    const want = await sample(tfjs);
    const got = await sample(engine.denoise);
    const again = await sample(engine.denoise);
    assert.deepEqual(again, got, `${kind}: onnxruntime is deterministic`);
    let diff = 0;
    for (let i = 0; i < want.length; i++) diff = Math.max(diff, Math.abs(want[i] - got[i]));
    assert.ok(diff < 1e-4, `${kind}: max |onnxruntime - tfjs| = ${diff}`);
  }
  await engine.close();
  model.dispose();

  const first = await Deno.readFile(join(checkpointDir, "model.onnx"));
  const cached = await exportCheckpoint(checkpointDir, {
    model: config.model,
    size: 8,
    ema: false,
  });
  assert.ok(cached.reused, "the second export reuses model.onnx");
  assert.deepEqual(cached.bytes, first);
  const resized = await exportCheckpoint(checkpointDir, {
    model: config.model,
    size: 16,
    ema: false,
  });
  assert.ok(!resized.reused, "another image size is exported anew");
});

/** The largest difference, in grey levels, between two PNG files of the same size. */
async function greyLevels(a: string, b: string): Promise<number> {
  const pa = await decodePng(await Deno.readFile(a));
  const pb = await decodePng(await Deno.readFile(b));
  assert.equal(pa.data.length, pb.data.length);
  let most = 0;
  for (let i = 0; i < pa.data.length; i++) most = Math.max(most, Math.abs(pa.data[i] - pb.data[i]));
  return most;
}

Deno.test("a conditional run with guidance samples through onnxruntime, like tfjs", async () => {
  const file = await experimentFile({
    ...TINY_COND,
    sampler: { ...TINY_COND.sampler, engine: "onnxruntime", guidance: [0, 2] },
  });
  const out = await Deno.makeTempDir();
  const a = await runFile(file, { outRoot: out });
  const b = await runFile(file);
  const ma = (await readManifest(a.dir))!;
  const mb = (await readManifest(b.dir))!;
  assert.equal(ma.engine?.name, "onnxruntime");
  for (const m of [ma, mb]) delete m.artifacts["timings.jsonl"];
  assert.deepEqual(ma.artifacts, mb.artifacts, "the same bytes twice");
  assert.notEqual(ma.artifacts["samples-w2.png"], ma.artifacts["samples-w0.png"]);
  // The graph takes the labels.
  const onnx = decodeModel(await Deno.readFile(join(a.dir, "checkpoint/model.onnx")));
  assert.deepEqual(onnx.graph!.input!.map((i) => i.name), ["x", "t", "condition", "uncond"]);

  // The same training sampled by tfjs: every guided grid within one grey level.
  const c = await runFile(file, { outRoot: out, sets: ["sampler.engine=tfjs"] });
  const mc = (await readManifest(c.dir))!;
  assert.equal(mc.engine?.name, "tfjs");
  assert.equal(mc.reusedTraining?.dir, a.dir);
  for (const f of ["samples-w0.png", "samples-w2.png"]) {
    const most = await greyLevels(join(a.dir, f), join(c.dir, f));
    assert.ok(most <= 1, `${f}: engines differ by ${most} grey levels`);
  }
});

Deno.test("onnxruntime that cannot load: a clear message, and sampling falls back to tfjs", async () => {
  const config = ExperimentSchema.parse({ ...TINY, sampler: { engine: "onnxruntime" } });
  const logs: string[] = [];
  const tfjs = (x: tf.Tensor4D) => tf.zerosLike(x);
  const engine = await createSamplingEngine(config, {
    tfjs: () => tfjs,
    tfjsBackend: "wasm",
    checkpointDir: "/nonexistent",
    size: 8,
    log: (l) => logs.push(l),
    importOrt: () => Promise.reject(new Error("libonnxruntime.so.1: cannot open shared object")),
  });
  assert.equal(engine.denoise, tfjs);
  assert.equal(engine.conditioned({ labels: new Int32Array(0) }), tfjs);
  assert.deepEqual({ requested: engine.info.requested, name: engine.info.name }, {
    requested: "onnxruntime",
    name: "tfjs",
  });
  assert.match(
    logs[0],
    /^sampler\.engine onnxruntime: onnxruntime-node could not be loaded \(libonnxruntime\.so\.1: cannot open shared object\): run `deno install`.*; sampling with tfjs \(wasm\) instead$/,
  );
  assert.equal(engine.info.reason, logs[0]);
});

Deno.test("without --allow-ffi the package does not load, and the message says so", async () => {
  const runtime = new URL("../src/onnx/runtime.ts", import.meta.url).href;
  const script = `import { loadOnnxRuntime } from "${runtime}";
await loadOnnxRuntime().then(() => console.log("loaded"), (e) => console.log(e.message));`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--config",
      join(ROOT, "deno.json"),
      "--allow-read",
      "--allow-env",
      `data:application/typescript,${encodeURIComponent(script)}`,
    ],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.match(text, /onnxruntime-node could not be loaded \(Requires ffi access/);
  assert.match(text, /run with --allow-ffi/);
});
