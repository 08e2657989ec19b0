/**
 * Reproducibility across interruption and reuse: resume gives the bytes of an uninterrupted run,
 * a damaged checkpoint is refused, the training cache reuses identical training, and the verify,
 * diff and runs commands report what they should.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { experimentFile, ROOT, runFile, TINY } from "./helpers.ts";
import { readManifest } from "../src/run/manifest.ts";
import { verifyRun } from "../src/run/verify.ts";
import { diffRuns, formatRunDiff } from "../src/run/diff.ts";
import { formatRunTable, listRuns } from "../src/run/list.ts";
import { decodePng } from "../src/io/image.ts";

const TINY3 = { ...TINY, train: { ...TINY.train, epochs: 3 } };

const run = runFile;

async function interruptedRun(file: string, outRoot: string, atStep: number) {
  const controller = new AbortController();
  const result = await run(file, {
    outRoot,
    signal: controller.signal,
    onStep: ({ step }) => {
      if (step === atStep) controller.abort();
    },
  });
  return result;
}

Deno.test("an interrupted run resumed gives the bytes of an uninterrupted one", async () => {
  const file = await experimentFile(TINY3);
  const whole = await run(file);
  const out = await Deno.makeTempDir();
  // 3 steps per epoch: step 4 is in the middle of epoch 1.
  const stopped = await interruptedRun(file, out, 4);
  assert.equal(stopped.status, "interrupted");
  const m = (await readManifest(stopped.dir))!;
  assert.equal(m.status, "interrupted");
  const state = JSON.parse(await Deno.readTextFile(join(stopped.dir, "checkpoint/state.json")));
  assert.deepEqual(state, { step: 4, epoch: 1 });
  assert.ok(
    m.artifacts["checkpoint/model.safetensors"],
    "the checkpoint is hashed in the manifest",
  );
  assert.equal(m.artifacts["samples.png"], undefined, "no samples from an interrupted run");

  const resumed = await run(file, { outRoot: out, resume: true });
  assert.equal(resumed.status, "complete");
  const mr = (await readManifest(resumed.dir))!;
  assert.equal(mr.resumedAt?.length, 1);
  assert.deepEqual(mr.artifacts, (await readManifest(whole.dir))!.artifacts);
});

Deno.test("a damaged checkpoint is reported and never loaded", async () => {
  const file = await experimentFile(TINY3);
  const out = await Deno.makeTempDir();
  const stopped = await interruptedRun(file, out, 2);
  const weights = join(stopped.dir, "checkpoint/model.safetensors");
  const bytes = await Deno.readFile(weights);
  await Deno.writeFile(weights, bytes.subarray(0, bytes.length - 100));
  await assert.rejects(
    () => run(file, { outRoot: out, resume: true }),
    /checkpoint.*does not match its manifest.*model\.safetensors/s,
  );
  assert.equal((await readManifest(stopped.dir))!.status, "interrupted");
  await assert.rejects(() => run(file, { outRoot: out, resume: true, sets: ["seed=5"] }), /no run/);
});

Deno.test("the training cache reuses a complete run whose training part is equal", async () => {
  const file = await experimentFile(TINY3);
  const out = await Deno.makeTempDir();
  const base = await run(file, { outRoot: out });
  const q2 = await run(file, { outRoot: out, sets: ["name=tiny-q2", "sampler.stepNoise=false"] });
  const m = (await readManifest(q2.dir))!;
  assert.equal(m.reusedTraining?.dir, base.dir);
  const mb = (await readManifest(base.dir))!;
  assert.equal(m.trainingHash, mb.trainingHash);
  assert.notEqual(m.configHash, mb.configHash);
  assert.equal(
    m.artifacts["checkpoint/model.safetensors"],
    mb.artifacts["checkpoint/model.safetensors"],
  );
  assert.equal(m.artifacts["metrics.jsonl"], mb.artifacts["metrics.jsonl"]);
  assert.notEqual(m.artifacts["samples.png"], mb.artifacts["samples.png"]);
  // Training anew gives the same samples as the reuse.
  const retrained = await run(file, {
    outRoot: out,
    sets: ["name=tiny-q2", "sampler.stepNoise=false"],
    retrain: true,
    force: true,
  });
  const mr = (await readManifest(retrained.dir))!;
  assert.equal(mr.reusedTraining, undefined);
  assert.equal(mr.artifacts["samples.png"], m.artifacts["samples.png"]);
  // A change of training (seed) is not reused.
  const other = await run(file, { outRoot: out, sets: ["seed=3"] });
  assert.equal((await readManifest(other.dir))!.reusedTraining, undefined);
});

Deno.test("verify re-runs a run folder and reports artifact by artifact", async () => {
  const file = await experimentFile({ ...TINY, train: { ...TINY.train, epochs: 1 } });
  const r = await run(file);
  const ok = await verifyRun(r.dir);
  assert.ok(ok.identical);
  assert.ok(ok.checks.some((c) => c.path === "samples.png" && c.status === "match"));
  // Tamper with the recorded hash of samples.png: verify must notice.
  const m = (await readManifest(r.dir))!;
  m.artifacts["samples.png"] = "0".repeat(64);
  await Deno.writeTextFile(join(r.dir, "manifest.json"), JSON.stringify(m));
  const bad = await verifyRun(r.dir);
  assert.equal(bad.identical, false);
  assert.deepEqual(bad.checks.filter((c) => c.status !== "match").map((c) => c.path), [
    "samples.png",
  ]);
});

Deno.test("diff shows the config change, the metrics and image differences", async () => {
  const file = await experimentFile({ ...TINY, train: { ...TINY.train, epochs: 1 } });
  const out = await Deno.makeTempDir();
  const a = await run(file, { outRoot: out });
  const b = await run(file, { outRoot: out, sets: ["schedule.timesteps=16"] });
  const composites = await Deno.makeTempDir();
  const d = await diffRuns(a.dir, b.dir, { out: composites });
  assert.equal(d.identical, false);
  assert.deepEqual(d.config, [{ path: "schedule.timesteps", a: 8, b: 16 }]);
  const text = formatRunDiff(d);
  assert.match(text, /schedule\.timesteps: 8 -> 16/);
  assert.match(text, /finalLoss/);
  const samples = d.artifacts.find((r) => r.path === "samples.png")!;
  assert.equal(samples.status, "differs");
  assert.ok(samples.image && samples.image.psnr > 0 && samples.image.meanAbsDiff > 0);
  const png = await decodePng(await Deno.readFile(samples.composite!));
  // A | B | heat map (3 x 22 px and two 4 px gaps), the panel names above (15 px), the heat
  // map's scale below (15 px, the note may widen the image).
  assert.equal(png.height, 15 + 22 + 15);
  assert.ok(png.width >= 3 * 22 + 2 * 4, "A | B | heat map");
  // Two runs of the same config and seed in different roots are identical.
  const a2 = await run(file);
  const same = await diffRuns(a.dir, a2.dir);
  assert.ok(same.identical, formatRunDiff(same));
  assert.deepEqual(same.config, []);
  await assert.rejects(() => diffRuns(a.dir, composites), /not a run folder/);
  const table = formatRunTable(await listRuns(out));
  assert.match(table, /^name\s+seed\s+hash\s+status/);
  // A header, a row per run, then a blank line and the note that names the loss.
  assert.equal(table.split("\n").length, 5);
  assert.match(table, /\s-\s+\S+$/m, "a run without overrides");
  assert.match(table, /schedule\.timesteps=16/, "the other run's override");
  assert.match(table, /tiny\s+0\s+[0-9a-f]{8}\s+complete\s+3\s+\d\.\d{4}/);
});

Deno.test("Ctrl-C (SIGINT) checkpoints, marks the run interrupted and exits 130", async () => {
  const file = await experimentFile({ ...TINY, train: { ...TINY.train, epochs: 200 } });
  const out = await Deno.makeTempDir();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "mod.ts"), "run", file, "--out", out],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (!/step 3\//.test(seen)) {
    const { value, done } = await reader.read();
    if (done) break;
    seen += value;
  }
  child.kill("SIGINT");
  while (!(await reader.read()).done) { /* drain */ }
  const status = await child.status;
  await child.stderr.cancel();
  assert.equal(status.code, 130);
  const [entry] = await listRuns(out);
  assert.equal(entry.manifest.status, "interrupted");
  const state = JSON.parse(await Deno.readTextFile(join(entry.dir, "checkpoint/state.json")));
  assert.ok(state.step >= 3 && state.step < 600, `stopped at step ${state.step}`);
});
