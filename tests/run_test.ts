/**
 * End-to-end runs of tiny experiments: what a run folder holds, that two runs with the same seed
 * give the same bytes, and how the command line treats bad input (exit 2, no run folder).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { experimentFile, ROOT, runFile, TINY } from "./helpers.ts";
import type { ProgressDetail } from "../src/run/types.ts";
import { readManifest } from "../src/run/manifest.ts";
import { sha256File } from "../src/io/files.ts";
import { decodePng } from "../src/io/image.ts";
import { createModel, importParams } from "../src/model/mod.ts";
import { decodeSafetensors } from "../src/io/safetensors.ts";
import { deriveRng } from "../src/rng.ts";
import { tf } from "../src/tf.ts";

async function runTiny(out: string, sets: string[] = []) {
  return await runFile(await experimentFile(TINY), { outRoot: out, sets });
}

Deno.test("a tiny run writes a complete, self-describing run folder", async () => {
  const out = await Deno.makeTempDir();
  const result = await runTiny(out);
  assert.equal(result.status, "complete");
  assert.match(result.dir, /tiny\/seed-0-[0-9a-f]{8}$/);
  const manifest = (await readManifest(result.dir))!;
  assert.equal(manifest.status, "complete");
  assert.equal(manifest.summary.steps, 6); // 24 images / batch 8 = 3 steps per epoch, 2 epochs
  assert.equal(manifest.summary.parameters, 73_875);
  for (
    const f of [
      "config.json",
      "metrics.jsonl",
      "samples.png",
      "forward.png",
      "checkpoint/model.safetensors",
      "checkpoint/optimizer.safetensors",
      "checkpoint/state.json",
    ]
  ) {
    assert.equal(manifest.artifacts[f], await sha256File(join(result.dir, f)), f);
  }
  assert.ok("timings.jsonl" in manifest.volatileArtifacts);
  const config = JSON.parse(await Deno.readTextFile(join(result.dir, "config.json")));
  assert.equal(config.schedule.betaEnd, 0.02, "the resolved config has defaults filled in");
  const metrics = (await Deno.readTextFile(join(result.dir, "metrics.jsonl"))).trim().split("\n")
    .map((l) => JSON.parse(l));
  assert.deepEqual(metrics.map((m) => m.step), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(metrics.map((m) => m.epoch), [0, 0, 0, 1, 1, 1]);
  assert.ok(metrics.every((m) => Number.isFinite(m.loss) && m.loss > 0));
  // samples.png: 4 images of 8x8 in 2 columns, padding 2 -> 22 x 22.
  const samples = await decodePng(await Deno.readFile(join(result.dir, "samples.png")));
  assert.deepEqual([samples.width, samples.height], [22, 22]);
  // forward.png: 64 noised copies, 8 per row, scaled 3x so that "t=8" fits within each 24 px
  // image at 9 px or more: 8 * 30 + 6 = 246; the title "t under each image" (14 px), and under
  // each row of images a 17 px strip with their t (11 px text).
  const forward = await decodePng(await Deno.readFile(join(result.dir, "forward.png")));
  assert.deepEqual([forward.width, forward.height], [246, 246 + 14 + 8 * 17]);
  // The checkpoint loads back into a model of the recorded config.
  const model = createModel(config.model, { rng: deriveRng(99, "other") });
  const weights = decodeSafetensors(
    await Deno.readFile(join(result.dir, "checkpoint/model.safetensors")),
  );
  importParams(model, weights.tensors);
  const first = model.params.get("init_conv.weight")!.dataSync();
  assert.deepEqual(Array.from(first), Array.from(weights.tensors.get("init_conv.weight")!.data));
  model.dispose();
});

Deno.test("same experiment and seed give identical bytes; another seed does not", async () => {
  const a = await runTiny(await Deno.makeTempDir());
  const b = await runTiny(await Deno.makeTempDir());
  const ma = (await readManifest(a.dir))!;
  const mb = (await readManifest(b.dir))!;
  assert.deepEqual(ma.artifacts, mb.artifacts);
  const c = await runTiny(await Deno.makeTempDir(), ["seed=7"]);
  const mc = (await readManifest(c.dir))!;
  assert.notEqual(mc.artifacts["samples.png"], ma.artifacts["samples.png"]);
  assert.notEqual(
    mc.artifacts["checkpoint/model.safetensors"],
    ma.artifacts["checkpoint/model.safetensors"],
  );
  assert.match(c.dir, /seed-7-/);
});

Deno.test("a complete run is not overwritten without --force", async () => {
  const out = await Deno.makeTempDir();
  const first = await runTiny(out);
  await assert.rejects(() => runTiny(out), /already holds a complete run.*--force/);
  assert.equal((await readManifest(first.dir))!.status, "complete");
});

// ---------------------------------------------------------------- command line, as a user runs it

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "mod.ts"), ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function isEmptyDir(dir: string): Promise<boolean> {
  for await (const _ of Deno.readDir(dir)) return false;
  return true;
}

const BAD_INPUTS: [string, string, RegExp][] = [
  ["invalid JSON", '{\n  "name": "x",\n  "seed": 1,,\n}', /bad\.json.*line 3, column/],
  ["unknown key", JSON.stringify({ ...TINY, colour: "red" }), /bad\.json.*colour.*unknown key/],
  [
    "wrong type",
    JSON.stringify({ ...TINY, train: { epochs: "two" } }),
    /bad\.json.*train\.epochs.*expected number/,
  ],
  [
    "out of range",
    JSON.stringify({ ...TINY, schedule: { kind: "linear", timesteps: 5000 } }),
    /bad\.json.*schedule\.timesteps.*<= 4000/,
  ],
  [
    "missing extends target",
    JSON.stringify({ extends: "nope.json", name: "x" }),
    /bad\.json.*extends.*nope\.json/,
  ],
  [
    "missing image folder",
    JSON.stringify({ ...TINY, dataset: { kind: "folder", path: "no-such-dir" } }),
    /bad\.json.*dataset\.path.*no-such-dir.*does not exist/,
  ],
];

for (const [what, text, pattern] of BAD_INPUTS) {
  Deno.test(`bad input (${what}): exit 2, a clear message, no run folder`, async () => {
    const dir = await Deno.makeTempDir();
    const out = await Deno.makeTempDir();
    const file = join(dir, "bad.json");
    await Deno.writeTextFile(file, text);
    const r = await cli(["run", file, "--out", out]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, pattern);
    assert.doesNotMatch(r.stderr, /^\s+at /m, "no stack trace for user errors");
    assert.ok(await isEmptyDir(out), "no run folder is created");
  });
}

Deno.test("--set with a wrong type names the flag; --dry-run reports the numbers and trains nothing", async () => {
  const dir = await Deno.makeTempDir();
  const out = await Deno.makeTempDir();
  const file = join(dir, "exp.json");
  await Deno.writeTextFile(file, JSON.stringify(TINY));
  const bad = await cli(["run", file, "--out", out, "--set", "train.epochs=abc"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--set train\.epochs=abc.*train\.epochs/);
  const dry = await cli([
    "run",
    file,
    "--out",
    out,
    "--dry-run",
    "--set",
    "schedule.timesteps=100",
    "--seed",
    "3",
  ]);
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, /model parameters\s+73,875/);
  assert.match(dry.stdout, /sqrt\(alpha_bar_T\) 0\.603/);
  assert.match(dry.stdout, /training steps\s+6 \(3 per epoch, 2 epochs\)/);
  assert.match(dry.stdout, /dataset size\s+24 images/);
  assert.match(dry.stdout, /seed-3-/);
  assert.ok(await isEmptyDir(out), "a dry run creates nothing");
});

Deno.test("a run that throws after its folder exists is marked failed, with the error", async () => {
  const out = await Deno.makeTempDir();
  const file = await experimentFile(TINY);
  await assert.rejects(
    () =>
      runFile(file, {
        outRoot: out,
        onStep: ({ step }) => {
          if (step === 2) throw new Error("disk on fire");
        },
      }),
    /disk on fire/,
  );
  const [name] = [...Deno.readDirSync(join(out, "tiny"))].map((e) => e.name);
  const manifest = (await readManifest(join(out, "tiny", name)))!;
  assert.equal(manifest.status, "failed");
  assert.match(manifest.error!, /disk on fire/);
  assert.equal(manifest.artifacts["samples.png"], undefined);
  assert.ok(manifest.endedAt, "the end time is recorded");
});

Deno.test("seams: an evaluation hook after each epoch and at the end; a progress reporter", async () => {
  const file = await experimentFile(TINY);
  const points: string[] = [];
  const phases = new Map<string, number[]>();
  const details: ProgressDetail[] = [];
  const result = await runFile(file, {
    evaluate: async (point) => {
      const x = tf.randomNormal([1, 8, 8, 3]) as tf.Tensor4D;
      const t = tf.fill([1], 3) as tf.Tensor1D;
      const out = await point.denoise(x, t);
      const shape = out instanceof Float32Array ? [out.length] : out.shape;
      tf.dispose([x, t, out as tf.Tensor]);
      points.push(`${point.step}/${point.epoch}/${point.final}/${shape.join("x")}`);
      point.onProgress?.(1, 2);
      return { score: point.step };
    },
    progress: {
      update: (phase, done, total, detail) => {
        phases.set(phase, [...(phases.get(phase) ?? []), done, total]);
        if (phase === "train") details.push(detail!);
      },
    },
  });
  // 3 steps per epoch, 2 epochs; the network output has the shape of x.
  assert.deepEqual(points, ["3/0/false/1x8x8x3", "6/1/false/1x8x8x3", "6/1/true/1x8x8x3"]);
  const lines = (await Deno.readTextFile(join(result.dir, "evaluations.jsonl"))).trim().split("\n");
  assert.deepEqual(lines.map((l) => JSON.parse(l)), [
    { step: 3, epoch: 0, score: 3 },
    { step: 6, epoch: 1, score: 6 },
  ]);
  const manifest = (await readManifest(result.dir))!;
  assert.equal(manifest.summary.score, 6);
  assert.ok(manifest.artifacts["evaluations.jsonl"]);
  assert.deepEqual(phases.get("train"), [1, 6, 2, 6, 3, 6, 4, 6, 5, 6, 6, 6]);
  assert.deepEqual(phases.get("sample")?.slice(-2), [8, 8]);
  assert.deepEqual(phases.get("evaluate"), [1, 2, 1, 2, 1, 2]);
  // The training bar's detail: epoch/epochs and the loss of the manifest (mean of the steps).
  assert.deepEqual(details.map((d) => `${d.epoch}/${d.epochs}`), [
    "1/2",
    "1/2",
    "1/2",
    "2/2",
    "2/2",
    "2/2",
  ]);
  assert.equal(details[5].loss, manifest.summary.lossMean50);
});
