/**
 * The command line as a new user meets it, through real `deno run mod.ts ...` subprocesses:
 * progress lines and the named loss, `runs`, Ctrl-C's resume command and `--resume` alone, a
 * complete run refused before any data is loaded, `sample`, and the dry run's time estimate.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { experimentFile, ROOT, TINY } from "./helpers.ts";
import { readManifest } from "../src/run/manifest.ts";
import { listRuns } from "../src/run/list.ts";
import { decodePng } from "../src/io/image.ts";
import { progressText } from "../src/cli/progress.ts";
import { shellQuote } from "../src/run/resume.ts";
import { estimateEvaluation, formatEstimate } from "../src/run/estimate.ts";
import { loadExperiment } from "../src/config/mod.ts";

const dec = new TextDecoder();

/** Runs `deno run -A mod.ts <args>` in `cwd` (default: the checkout). */
async function cli(
  args: string[],
  cwd = ROOT,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "mod.ts"), ...args],
    cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

Deno.test("progress lines name the loss; manifest and runs show the same number; runs lists overrides", async () => {
  const file = await experimentFile(TINY);
  const out = await Deno.makeTempDir();
  const r = await cli(["run", file, "--out", out, "--set", "sampler.count=2"]);
  assert.equal(r.code, 0, r.stderr);
  // Not a terminal: plain lines, one per logged step, with step/total, epoch/total, the loss
  // and what it is, s/step and the ETA.
  const steps = r.stdout.split("\n").filter((l) => l.startsWith("step "));
  assert.equal(steps.length, 6);
  assert.match(
    steps[3],
    /^step 4\/6 {2}epoch 2\/2 {2}loss \d\.\d{4} \(mean of last 50 steps\) {2}\d+\.\d\d s\/step {2}ETA \d+s$/,
  );
  assert.ok(!r.stdout.includes("\x1b["), "no terminal escapes when stdout is not a terminal");
  const [entry] = await listRuns(out);
  const losses = (await Deno.readTextFile(join(entry.dir, "metrics.jsonl"))).trim().split("\n")
    .map((l) => JSON.parse(l).loss as number);
  const shown = steps[5].match(/loss (\d\.\d{4})/)![1];
  const summary = entry.manifest.summary.lossMean50 as number;
  assert.ok(Math.abs(summary - mean(losses)) < 1e-12, "mean of the (6 < 50) steps");
  assert.equal(summary.toFixed(4), shown);
  // The threads that computed: this one and the one gradient worker of train.workers = 1.
  assert.equal(entry.manifest.backend.threads, 2);
  assert.equal(entry.manifest.backend.workers, 1);

  const runs = await cli(["runs", out]);
  assert.equal(runs.code, 0, runs.stderr);
  const row = runs.stdout.split("\n").find((l) => l.startsWith("tiny"))!;
  assert.match(row, new RegExp(`complete\\s+6\\s+${shown}\\s+.*sampler\\.count=2\\s+${entry.dir}`));
  assert.match(runs.stdout, /loss\*/);
  assert.match(runs.stdout, /\* loss: training loss, mean of last 50 steps/);

  const missing = await cli(["runs", join(out, "no-such-folder")]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /no-such-folder: no such folder/);
});

Deno.test("one step is '1 step'", async () => {
  const file = await experimentFile({ ...TINY, train: { ...TINY.train, maxSteps: 1 } });
  const r = await cli(["run", file, "--out", await Deno.makeTempDir()]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /training 1 step on wasm/);
  assert.doesNotMatch(r.stdout + r.stderr, /\b1 steps\b/);
  const dry = await cli(["run", file, "--dry-run", "--set", "train.logEvery=1"]);
  assert.match(dry.stdout, /at most 1 step, log every step/);
  assert.doesNotMatch(dry.stdout, /\b1 (steps|epochs|images)\b/);
});

Deno.test("Ctrl-C prints the resume command; --resume alone finds the run; a complete run is refused before loading data", async () => {
  const dir = await Deno.makeTempDir();
  const file = join(dir, "exp.json");
  await Deno.writeTextFile(file, JSON.stringify(TINY));
  const out = join(dir, "runs");
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "mod.ts"), "run", "exp.json", "--out", "runs"].concat(
      ["--set", "train.epochs=5", "--set", "sampler.count=2"],
    ),
    cwd: dir,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (!/step 2\//.test(seen)) {
    const { value, done } = await reader.read();
    if (done) break;
    seen += value;
  }
  child.kill("SIGINT");
  for (let r = await reader.read(); !r.done; r = await reader.read()) seen += r.value;
  assert.equal((await child.status).code, 130);
  await child.stderr.cancel();
  // The exact command, relative to where the user ran it, with the overrides.
  assert.match(
    seen,
    /resume with: deno task run exp\.json --set train\.epochs=5 --set sampler\.count=2 --out runs --resume\n/,
  );
  const [interrupted] = await listRuns(out);
  assert.equal(interrupted.manifest.status, "interrupted");

  // --resume without the overrides finds the interrupted run of exp.json and finishes it.
  const resumed = await cli(["run", "exp.json", "--out", "runs", "--resume"], dir);
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.match(
    resumed.stdout,
    /resuming runs\/tiny\/seed-0-\w+ \(overrides: train\.epochs=5 sampler\.count=2\)/,
  );
  assert.match(resumed.stdout, /resuming at step \d+ of 15/);
  const manifest = (await readManifest(interrupted.dir))!;
  assert.equal(manifest.status, "complete");
  assert.equal(manifest.summary.steps, 15);

  // Nothing left to resume: said so, exit 2.
  const again = await cli(["run", "exp.json", "--out", "runs", "--resume"], dir);
  assert.equal(again.code, 2);
  assert.match(again.stderr, /--resume: no interrupted run of .*exp\.json under runs \(1 complete/);

  // The complete run is refused before the dataset is loaded.
  const twice = await cli(
    ["run", "exp.json", "--out", "runs", "--set", "train.epochs=5", "--set", "sampler.count=2"],
    dir,
  );
  assert.equal(twice.code, 2);
  assert.match(twice.stderr, /already holds a complete run.*--force.*deno task sample/);
  assert.doesNotMatch(twice.stdout, /loading dataset/);
});

Deno.test("sample: a trained run sampled again into a sub-folder, without training", async () => {
  const file = await experimentFile({
    ...TINY,
    train: { ...TINY.train, epochs: 1 },
    sampler: { ...TINY.sampler, trajectory: { count: 2, frames: 3, gifFrames: 0 } },
  });
  const out = await Deno.makeTempDir();
  assert.equal((await cli(["run", file, "--out", out])).code, 0);
  const [run] = await listRuns(out);
  const before = await Deno.readTextFile(join(run.dir, "manifest.json"));

  // Same seed and sampler: the run's own samples, byte for byte.
  const same = await cli(["sample", run.dir]);
  assert.equal(same.code, 0, same.stderr);
  assert.doesNotMatch(same.stdout, /training/);
  const sameDir = same.stdout.match(/samples: (\S+)/)![1];
  assert.ok(sameDir.startsWith(join(run.dir, "samples", "seed-0-")));
  assert.deepEqual(
    await Deno.readFile(join(sameDir, "samples.png")),
    await Deno.readFile(join(run.dir, "samples.png")),
  );
  assert.deepEqual(
    await Deno.readFile(join(sameDir, "trajectory.png")),
    await Deno.readFile(join(run.dir, "trajectory.png")),
  );

  // Another seed, count and sampler: another folder, other images, recorded in sample.json.
  const other = await cli([
    "sample",
    run.dir,
    "--seed",
    "5",
    "--count",
    "2",
    "--set",
    "sampler.variance=beta",
  ]);
  assert.equal(other.code, 0, other.stderr);
  const otherDir = other.stdout.match(/samples: (\S+)/)![1];
  assert.match(otherDir, /samples\/seed-5-[0-9a-f]{8}$/);
  const record = JSON.parse(await Deno.readTextFile(join(otherDir, "sample.json")));
  assert.equal(record.seed, 5);
  assert.equal(record.step, 3);
  assert.equal(record.sampler.count, 2);
  assert.equal(record.sampler.variance, "beta");
  const png = await decodePng(await Deno.readFile(join(otherDir, "samples.png")));
  assert.deepEqual([png.width, png.height], [2 * 10 + 2, 12], "two 8 px images in a row");

  // Through ONNX Runtime: its own folder, the engine recorded, the same pictures to a grey level.
  const ort = await cli(["sample", run.dir, "--set", "sampler.engine=onnxruntime"]);
  assert.equal(ort.code, 0, ort.stderr);
  assert.match(ort.stdout, /sampling with onnxruntime .* on cpu/);
  const ortDir = ort.stdout.match(/samples: (\S+)/)![1];
  assert.notEqual(ortDir, sameDir);
  const ortRecord = JSON.parse(await Deno.readTextFile(join(ortDir, "sample.json")));
  assert.equal(ortRecord.engine.name, "onnxruntime");
  const [po, pr] = await Promise.all(
    [ortDir, run.dir].map(async (d) => decodePng(await Deno.readFile(join(d, "samples.png")))),
  );
  assert.ok(po.data.every((v, i) => Math.abs(v - pr.data[i]) <= 1), "within one grey level");

  // The run itself is untouched: same manifest, and verify-relevant artifacts unchanged.
  assert.equal(await Deno.readTextFile(join(run.dir, "manifest.json")), before);

  const training = await cli(["sample", run.dir, "--set", "train.epochs=3"]);
  assert.equal(training.code, 2);
  assert.match(training.stderr, /only the sampler can change without retraining/);
  const notRun = await cli(["sample", out]);
  assert.equal(notRun.code, 2);
  assert.match(notRun.stderr, /is not a run folder/);
});

Deno.test("--dry-run estimates the wall time from measured steps and creates nothing", async () => {
  const file = await experimentFile(TINY);
  const out = await Deno.makeTempDir();
  const r = await cli(["run", file, "--out", out, "--dry-run"]);
  assert.equal(r.code, 0, r.stderr);
  const m = r.stdout.match(
    /estimated time {4}\S+ on wasm on this machine: training 6 × (\d+\.\d+) s\/step \+ sampling 8 × (\d+\.\d+) s\/step/,
  );
  assert.ok(m, r.stdout);
  assert.ok(Number(m[1]) > 0 && Number(m[2]) > 0);
  assert.doesNotMatch(r.stdout, /estimated as 3 forward passes|stopped measuring/, "measured");
  for await (const _ of Deno.readDir(out)) assert.fail("a dry run creates nothing");
});

Deno.test("--dry-run's evaluation line: how many evaluations, their sampling, how to shrink them", async () => {
  const file = await experimentFile({
    ...TINY,
    train: { ...TINY.train, epochs: 5 },
    eval: { every: 2, samples: 10 },
  });
  const { config } = await loadExperiment(file);
  // Epochs 2 and 4 during training (5 is the last: the final evaluation covers it), and the end.
  const v = estimateEvaluation(config, {
    steps: { total: 15, perEpoch: 3 },
    secondsPerImageStep: 0.5,
    timesteps: 8,
  })!;
  assert.deepEqual(
    { count: v.count, batches: v.batches, stepsPerBatch: v.stepsPerBatch },
    { count: 3, batches: 3, stepsPerBatch: 8 },
  );
  // 10 samples (batches of 4, 4 and 2) x 8 steps x 0.5 s.
  assert.equal(v.finalSeconds, 40);
  assert.equal(v.seconds, 120);
  assert.equal(
    estimateEvaluation({ ...config, eval: undefined }, {
      steps: { total: 15, perEpoch: 3 },
      secondsPerImageStep: 0.5,
      timesteps: 8,
    }),
    undefined,
  );
  const text = formatEstimate({
    backend: "wasm",
    secondsPerStep: 0.1,
    steps: 15,
    secondsPerSampleStep: 0.05,
    sampleSteps: 8,
    evaluation: { ...v, samples: 256 },
    totalSeconds: 122,
  });
  assert.match(text, /^estimated time {4}2m02s on wasm .* \+ evaluation 2m00s \(decoding/);
  assert.match(
    text,
    /\nevaluation {8}3 \(every eval\.every epochs and at the end\), eval\.samples 256 each \(kid, fid\): sampling 3 batches × 8 steps ≈ 40s each, then the feature network on the samples at 299 px \(not measured; the reference and floor sets once per dataset\)\. Smaller: --set eval\.samples=32 --set eval\.resize=128$/,
  );
});

Deno.test("progress bar text: rates, ETA, epoch and the named loss", () => {
  assert.deepEqual(
    progressText("train", {
      done: 20,
      total: 100,
      seconds: 10,
      detail: { epoch: 2, epochs: 5, loss: 0.12345 },
    }),
    {
      rate: "0.50 s/step",
      remaining: "40s",
      detail: "  epoch 2/5  loss 0.1235 (mean of last 50 steps)",
    },
  );
  assert.deepEqual(progressText("data", { done: 300, total: 1200, seconds: 2 }), {
    rate: "150 images/s",
    remaining: "6s",
    detail: "",
  });
  assert.equal(progressText("sample", { done: 0, total: 8, seconds: 0 }).remaining, "?");
  assert.equal(shellQuote("a=b"), "a=b");
  assert.equal(shellQuote('dataset={"kind":"x"}'), `'dataset={"kind":"x"}'`);
  assert.equal(shellQuote("it's"), `'it'\\''s'`);
});
