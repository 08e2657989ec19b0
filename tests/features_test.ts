/**
 * Every training and sampling option of the experiment file, end to end through the runner:
 * the files they add, reproducibility with all of them on, and resume with an EMA.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { readManifest } from "../src/run/manifest.ts";
import { decodePng } from "../src/io/image.ts";
import { experimentFile, runFile, TINY } from "./helpers.ts";

const ALL = {
  ...TINY,
  name: "all-options",
  schedule: { kind: "cosine", timesteps: 12 },
  model: { ...TINY.model, dropout: 0.1, prediction: "v", attention: { kind: "full", levels: [1] } },
  loss: { kind: "huber", delta: 0.5 },
  optimizer: {
    lr: 0.002,
    warmupSteps: 2,
    lrDecay: "cosine",
    minLr: 0.0001,
    clipGradNorm: 1,
    ema: { decay: 0.9, startStep: 1 },
  },
  train: { ...TINY.train, epochs: 3 },
  sampler: {
    kind: "ddim",
    steps: 6,
    eta: 0.5,
    clipX0: true,
    count: 4,
    batchSize: 4,
    gridColumns: 2,
    trajectory: { count: 2, frames: 4, gifFrames: 5, gifDelayMs: 50 },
  },
  recovery: { count: 2, t: [3, 12], stepNoise: true },
};

Deno.test("all options together: the extra files, and the same bytes twice", async () => {
  const file = await experimentFile(ALL);
  const a = await runFile(file);
  const ma = (await readManifest(a.dir))!;
  assert.equal(ma.status, "complete");
  for (
    const f of ["trajectory.png", "trajectory.gif", "recovery.png", "checkpoint/ema.safetensors"]
  ) {
    assert.ok(ma.artifacts[f], `${f} is written and hashed`);
  }
  assert.equal(ma.summary.samplingSteps, 6);
  // recovery.png: 2 t values x 2 images = 4 rows of 4 columns of 8x8, scaled 4x so that "σ²=β̃"
  // fits within a 32 px image at 9 px -> 168 x 168, with the column names above (a 17 px strip)
  // and each row's t on the left ("t=12": 34 px).
  const recovery = await decodePng(await Deno.readFile(join(a.dir, "recovery.png")));
  assert.deepEqual([recovery.width, recovery.height], [34 + 168, 17 + 168]);
  // recovery.json: the distances behind it, per t, on a 0-1 scale, with another face for scale
  assert.ok(ma.artifacts["recovery.json"], "recovery.json is written and hashed");
  const distances = JSON.parse(await Deno.readTextFile(join(a.dir, "recovery.json")));
  assert.equal(distances.count, 2);
  assert.deepEqual(distances.t.map((d: { t: number }) => d.t), [3, 12]);
  for (const d of distances.t) {
    for (
      const s of [d.noisedToOriginal, d.toOriginal.beta, d.toOriginal.posterior, d.toRandom.beta]
    ) {
      assert.ok(s.n === 2 && s.mean > 0 && s.mean < 1, JSON.stringify(s));
    }
  }
  // more noise, further from the original
  assert.ok(distances.t[1].noisedToOriginal.mean > distances.t[0].noisedToOriginal.mean);
  assert.equal(typeof ma.summary.trainPeakRssMiB, "number");
  assert.ok((ma.summary.peakRssMiB as number) >= (ma.summary.trainPeakRssMiB as number));
  const gif = await Deno.readFile(join(a.dir, "trajectory.gif"));
  assert.equal(new TextDecoder().decode(gif.subarray(0, 6)), "GIF89a");
  const b = await runFile(file);
  assert.deepEqual((await readManifest(b.dir))!.artifacts, ma.artifacts);
  const metrics = (await Deno.readTextFile(join(a.dir, "metrics.jsonl"))).trim().split("\n");
  assert.equal(metrics.length, 9);
});

Deno.test("all options together: an interrupted run resumes to the same bytes (EMA included)", async () => {
  const file = await experimentFile(ALL);
  const whole = await runFile(file);
  const out = await Deno.makeTempDir();
  const controller = new AbortController();
  const stopped = await runFile(file, {
    outRoot: out,
    signal: controller.signal,
    onStep: ({ step }) => step === 5 && controller.abort(),
  });
  assert.equal(stopped.status, "interrupted");
  const resumed = await runFile(file, { outRoot: out, resume: true });
  assert.deepEqual(
    (await readManifest(resumed.dir))!.artifacts,
    (await readManifest(whole.dir))!.artifacts,
  );
});

Deno.test("options change what is trained: EMA, prediction target and dropout each change the weights", async () => {
  const base = await runFile(await experimentFile(TINY));
  const weights = async (body: unknown) => {
    const r = await runFile(await experimentFile(body));
    return (await readManifest(r.dir))!.artifacts["checkpoint/model.safetensors"];
  };
  const baseWeights = (await readManifest(base.dir))!.artifacts["checkpoint/model.safetensors"];
  for (
    const change of [
      { model: { ...TINY.model, prediction: "x0" } },
      { model: { ...TINY.model, dropout: 0.2 } },
      { optimizer: { clipGradNorm: 0.01 } },
      { optimizer: { warmupSteps: 3 } },
    ]
  ) {
    assert.notEqual(await weights({ ...TINY, ...change }), baseWeights, JSON.stringify(change));
  }
});
