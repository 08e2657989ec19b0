/**
 * Sweeps: expanding points, the errors of bad sweeps, a local sweep whose points share their
 * training, and a three-point sweep through a real one-node Slurm cluster on localhost.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { cli, experimentFile, ROOT, TINY } from "./helpers.ts";
import { configHash, loadExperiment } from "../src/config/mod.ts";
import { trainingHash } from "../src/run/training_cache.ts";
import { readManifest } from "../src/run/manifest.ts";
import { loadSweep, loadSweepPoint, readIndex, runSweep } from "../src/sweep/mod.ts";
import { compressIndices, expandSweep } from "../src/sweep/points.ts";
import {
  arraySpec,
  currentSlurmJob,
  sbatchScript,
  slurmSeconds,
  warningSeconds,
} from "../src/sweep/slurm.ts";
import { failureAdvice } from "../src/sweep/mod.ts";
import type { IndexPoint } from "../src/sweep/sweep_index.ts";
import { SlurmSchema, SweepSchema } from "../schemas/experiment.ts";
import { slurmUnavailable, startSlurmCluster } from "./slurm_cluster.ts";
import { decodePng } from "../src/io/image.ts";

Deno.test("a grid sweep varies the last path fastest, zip pairs values, seeds repeat points", () => {
  const grid = expandSweep(
    SweepSchema.parse({ "schedule.timesteps": [100, 200], "sampler.stepNoise": [true, false] }),
    { seed: 7 },
  );
  assert.deepEqual(grid.map((p) => [p.index, p.overrides, p.seed]), [
    [0, { "schedule.timesteps": 100, "sampler.stepNoise": true }, 7],
    [1, { "schedule.timesteps": 100, "sampler.stepNoise": false }, 7],
    [2, { "schedule.timesteps": 200, "sampler.stepNoise": true }, 7],
    [3, { "schedule.timesteps": 200, "sampler.stepNoise": false }, 7],
  ]);
  const zip = expandSweep(
    SweepSchema.parse({
      mode: "zip",
      seeds: [0, 1],
      "schedule.timesteps": [100, 200],
      "train.epochs": [3, 5],
    }),
    { seed: 7 },
  );
  assert.deepEqual(zip.map((p) => [p.overrides["schedule.timesteps"], p.seed]), [
    [100, 0],
    [100, 1],
    [200, 0],
    [200, 1],
  ]);
  assert.equal(zip[3].overrides["train.epochs"], 5);
  assert.throws(
    () => expandSweep(SweepSchema.parse({ mode: "zip", a: [1, 2], b: [1] }), { seed: 0 }),
    /a: 2, b: 1/,
  );
  assert.equal(compressIndices([5, 0, 1, 2, 7, 8]), "0-2,5,7-8");
  assert.equal(arraySpec([0, 1, 2, 3], 2), "0-3%2");
});

Deno.test("q1-sweep's points are q1-t100..q1-t500; q2-sweep's four share the T = 200 training", async () => {
  const dir = join(ROOT, "experiments");
  const q1 = await loadSweep(join(dir, "q1-sweep.json"));
  assert.deepEqual(q1.points.map((p) => p.loaded.config.schedule.timesteps), [100, 200, 300, 500]);
  for (const point of q1.points) {
    const T = point.loaded.config.schedule.timesteps;
    const file = (await loadExperiment(join(dir, `q1-t${T}.json`))).config;
    assert.equal(trainingHash(point.loaded.config), trainingHash(file), `T = ${T}`);
    assert.deepEqual(point.loaded.config.sampler, file.sampler);
  }
  const q2 = await loadSweep(join(dir, "q2-sweep.json"));
  const t200 = trainingHash((await loadExperiment(join(dir, "q1-t200.json"))).config);
  assert.deepEqual(q2.points.map((p) => trainingHash(p.loaded.config)), Array(4).fill(t200));
  const samplers = q2.points.map((
    p,
  ) => [p.loaded.config.sampler.initialNoise, p.loaded.config.sampler.stepNoise]);
  assert.deepEqual(samplers, [["gaussian", true], ["gaussian", false], ["zeros", true], [
    "zeros",
    false,
  ]]);
  const fixed = (await loadExperiment(join(dir, "q2-fixed-xt.json"))).config;
  assert.deepEqual(q2.points[2].loaded.config.sampler, fixed.sampler);
  assert.equal(q1.slurm.cpus, 2);
});

Deno.test("the sbatch script holds launcher.slurm's resources and runs --sweep-index per task", () => {
  const slurm = SlurmSchema.parse({
    partition: "gpu",
    gpus: 1,
    cpus: 4,
    memory: "8G",
    time: "02:00:00",
    extra: ["--account=lab"],
    setup: ["module load cuda"],
  });
  const script = sbatchScript(slurm, {
    name: "q1",
    file: "/x/q1 sweep.json",
    outRoot: "/shared/outputs",
    sets: ["train.epochs=1"],
    logDir: "/shared/outputs/q1/logs",
    cwd: "/x",
  });
  for (
    const line of [
      "#SBATCH --partition=gpu",
      "#SBATCH --gpus=1",
      "#SBATCH --cpus-per-task=4",
      "#SBATCH --mem=8G",
      "#SBATCH --time=02:00:00",
      "#SBATCH --account=lab",
      "#SBATCH --output=/shared/outputs/q1/logs/point-%a.log",
      "module load cuda",
    ]
  ) assert.ok(script.split("\n").includes(line), line);
  // The run replaces the shell (exec): Slurm's signals reach it, and its status is the job's.
  // Warned 300 s before the 2-hour limit, it checkpoints and requeues itself (--requeue).
  assert.match(
    script,
    /\nexec \S+ run -A .* run '\/x\/q1 sweep.json' --sweep-index "\$SLURM_ARRAY_TASK_ID" --out \/shared\/outputs --set train.epochs=1 --requeue\n/,
  );
  assert.match(script, /#SBATCH --signal=B:USR2@300\n#SBATCH --requeue\n/);
  // No warning: no requeue.
  const plain = sbatchScript(SlurmSchema.parse({ signal: 0 }), {
    name: "q1",
    file: "/x/q1.json",
    outRoot: "/o",
    sets: [],
    logDir: "/o/q1/logs",
    cwd: "/x",
  });
  assert.doesNotMatch(plain, /--signal|--requeue/);
});

Deno.test("Slurm times in seconds; the warning's default and a warning as long as the limit", () => {
  assert.deepEqual(
    ["90", "5:30", "02:00:00", "1-00", "1-02:30", "1-00:00:05", "1:2:3:4", "x"].map(slurmSeconds),
    [5400, 330, 7200, 86400, 95400, 86405, null, null],
  );
  const warning = (slurm: unknown) => warningSeconds(SlurmSchema.parse(slurm));
  assert.equal(warning({}), 300);
  assert.equal(warning({ time: "02:00:00" }), 300);
  assert.equal(warning({ time: "00:10:00" }), 150, "a quarter of a short limit");
  assert.equal(warning({ time: "00:01:00", signal: 20 }), 20);
  assert.equal(warning({ time: "00:01:00", signal: 0 }), 0);
  assert.throws(
    () => warning({ time: "00:05:00", signal: 300 }),
    /launcher\.slurm\.signal: launcher\.slurm\.signal 300 s is not shorter than launcher\.slurm\.time 00:05:00 \(300 s\): the warning would come as the point starts \(expected a few minutes under the time limit .*e\.g\. 75, or 0 for no warning\)/,
  );
});

Deno.test("what to do about a point that did not complete, from Slurm's state or the run's status", () => {
  const point = (status: string, error?: string) =>
    ({
      index: 0,
      overrides: {},
      seed: 0,
      run: "r",
      configHash: "",
      trainingHash: "",
      log: "l",
      status,
      error,
    }) as IndexPoint;
  assert.match(
    failureAdvice(point("interrupted", "slurm: TIMEOUT")),
    /^it reached its time limit: raise launcher\.slurm\.time, or keep launcher\.slurm\.signal above 0 .*; then run the same sweep command again: complete points are skipped/,
  );
  assert.match(
    failureAdvice(point("killed", "slurm: OUT_OF_MEMORY")),
    /^it ran out of memory: raise launcher\.slurm\.memory/,
  );
  assert.match(
    failureAdvice(point("interrupted")),
    /^it stopped before the end .* resume from their checkpoints/,
  );
  assert.match(failureAdvice(point("killed")), /^its process died without marking the run/);
  assert.match(
    failureAdvice(point("failed", "the loss diverged")),
    /^its run failed with the error above/,
  );
  assert.match(failureAdvice(point("pending")), /^it never started a run \(see its log\)/);
  assert.equal(
    currentSlurmJob(
      new Map([["SLURM_ARRAY_JOB_ID", "7"], ["SLURM_ARRAY_TASK_ID", "2"], ["SLURM_JOB_ID", "9"]]),
    ),
    "7_2",
  );
  assert.equal(currentSlurmJob(new Map([["SLURM_JOB_ID", "9"]])), "9");
  assert.equal(currentSlurmJob(new Map()), null);
});

Deno.test("--launcher slurm where sbatch is missing: exit 2, what to do, nothing submitted or written", async () => {
  const out = await Deno.makeTempDir();
  const file = await experimentFile({
    ...TINY,
    name: "tiny-nosbatch",
    sweep: { "schedule.timesteps": [4, 8] },
  });
  const result = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "mod.ts"), "sweep", file, "--launcher", "slurm", "--out", out],
    env: { PATH: "/nonexistent-ddpm-lab-bin" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
  assert.equal(result.code, 2, text);
  assert.match(
    text,
    /error: sbatch was not found on the PATH: Slurm's client commands are not installed on this machine \(expected a cluster's login node, where `sbatch --version` works, or --launcher local to run the points here; nothing was submitted\)/,
  );
  assert.doesNotMatch(text, /^\s+at /m, "no stack trace");
  assert.deepEqual([...Deno.readDirSync(out)], [], "nothing written");
});

Deno.test("bad sweeps exit 2 naming the file and what is wrong, and create nothing", async () => {
  const out = await Deno.makeTempDir();
  const cases: [unknown, string[], RegExp][] = [
    [TINY, [], /exp\.json: sweep: this experiment declares no sweep/],
    [{ ...TINY, sweep: { seed: [1, 2] } }, [], /'seed' cannot be swept.*sweep\.seeds/],
    [
      { ...TINY, sweep: { mode: "zip", "schedule.timesteps": [4, 8], "train.epochs": [1] } },
      [],
      /zip needs lists of one length/,
    ],
    [
      { ...TINY, sweep: { "schedule.timesteps": [4, 0] } },
      [],
      /sweep: point 1 \(schedule\.timesteps=0 seed=0\):.*schedule\.timesteps/,
    ],
    [
      { ...TINY, sweep: { "schedule.timesteps": [4, 8] } },
      ["--set", "schedule.timesteps=5"],
      /--set schedule\.timesteps=5 changes a swept path/,
    ],
    [{ ...TINY, sweep: { "schedule.timesteps": 4 } }, [], /sweep/],
  ];
  for (const [body, extra, message] of cases) {
    const file = await experimentFile(body);
    const { code, out: text } = await cli(["sweep", file, "--out", out, ...extra]);
    assert.equal(code, 2, text);
    assert.match(text, message);
  }
  const file = await experimentFile({ ...TINY, sweep: { "schedule.timesteps": [4, 8] } });
  const { code, out: text } = await cli(["run", file, "--sweep-index", "2", "--out", out]);
  assert.equal(code, 2);
  assert.match(text, /--sweep-index 2: the sweep has 2 points \(expected 0 to 1\)/);
  assert.deepEqual([...Deno.readDirSync(out)], [], "nothing written");
});

Deno.test("a local sweep trains once per training config, skips complete points on a rerun", async () => {
  const out = await Deno.makeTempDir();
  // Two seeds x step noise on/off: two trainings, each reused by the other sampler setting.
  const file = await experimentFile({
    ...TINY,
    name: "tiny-sweep",
    sweep: { "sampler.stepNoise": [true, false], seeds: [0, 1] },
  });
  const lines: string[] = [];
  const result = await runSweep(file, {
    launcher: "local",
    jobs: 2,
    outRoot: out,
    log: (l) => lines.push(l),
  });
  assert.deepEqual(result.failed, [], lines.join("\n"));
  const { index } = (await readIndex(join(out, "tiny-sweep")))!;
  assert.equal(index.points.length, 4);
  assert.deepEqual(index.points.map((p) => [p.overrides["sampler.stepNoise"], p.seed]), [
    [true, 0],
    [true, 1],
    [false, 0],
    [false, 1],
  ]);
  assert.ok(index.points.every((p) => p.status === "complete"));
  const manifests = await Promise.all(
    index.points.map((p) => readManifest(join(out, "tiny-sweep", p.run))),
  );
  // Points 2 and 3 differ from 0 and 1 only in sampling: they reuse those trainings.
  assert.equal(manifests[0]!.reusedTraining, undefined);
  assert.equal(manifests[1]!.reusedTraining, undefined);
  assert.equal(manifests[2]!.reusedTraining?.configHash, manifests[0]!.configHash);
  assert.equal(manifests[3]!.reusedTraining?.configHash, manifests[1]!.configHash);
  assert.equal(manifests[2]!.summary.finalLoss, manifests[0]!.summary.finalLoss);
  assert.notEqual(manifests[1]!.summary.finalLoss, manifests[0]!.summary.finalLoss);
  assert.deepEqual(manifests[3]!.source.overrides, ["sampler.stepNoise=false", "seed=1"]);
  // sweep.png: every point's samples under a strip naming it.
  const figure = await decodePng(await Deno.readFile(join(out, "tiny-sweep", "sweep.png")));
  const grid = await decodePng(
    await Deno.readFile(join(out, "tiny-sweep", index.points[0].run, "samples.png")),
  );
  assert.ok(figure.height > 4 * grid.height, `${figure.height} vs 4 x ${grid.height}`);
  assert.ok(lines.some((l) => /samples of every complete point, named: .*sweep\.png/.test(l)));
  // Each point's log holds its run's output.
  const log = await Deno.readTextFile(join(out, "tiny-sweep", index.points[2].log));
  assert.match(log, /reusing the training of/);
  // `run --sweep-index` loads exactly the point's config.
  const point = await loadSweepPoint(file, { index: 3 });
  assert.equal(configHash(point.config), index.points[3].configHash);
  // A second sweep finds every point complete and starts nothing.
  const again: string[] = [];
  const second = await runSweep(file, {
    launcher: "local",
    outRoot: out,
    log: (l) => again.push(l),
  });
  assert.match(again[0], /4 points \(4 complete, 0 running elsewhere or queued, 0 to run\)/);
  assert.ok(second.index.points.every((p) => p.status === "complete"));
});

Deno.test("sweep --dry-run lists the points with a time measured here, and writes nothing", async () => {
  const out = await Deno.makeTempDir();
  const file = await experimentFile({
    ...TINY,
    name: "tiny-dry",
    sweep: { "schedule.timesteps": [4, 8], "sampler.stepNoise": [true, false] },
  });
  const lines: string[] = [];
  await runSweep(file, {
    launcher: "local",
    outRoot: out,
    dryRun: true,
    log: (l) => lines.push(l),
  });
  const text = lines.join("\n");
  assert.match(text, /4 points \(0 complete, 0 running elsewhere or queued, 4 to run\)/);
  // Points 0 and 2 train (T differs); 1 and 3 only sample, from their training.
  for (const i of [0, 2]) assert.match(text, new RegExp(`point ${i}: \\S+ \\(6 steps × [0-9.]+ s`));
  assert.match(text, /point 1: \S+ \(sampling only: reuses the training of point 0\)/);
  assert.match(text, /point 3: \S+ \(sampling only: reuses the training of point 2\)/);
  assert.match(text, /all points one after another: /);
  assert.deepEqual([...Deno.readDirSync(out)], []);
});

Deno.test("a failing point is reported with its log, and the sweep exits 1", async () => {
  const out = await Deno.makeTempDir();
  const file = await experimentFile({
    ...TINY,
    name: "tiny-fail",
    sweep: { dataset: [{ kind: "folder", path: "/nonexistent-ddpm-lab-images" }] },
  });
  const { code, out: text } = await cli(["sweep", file, "--out", out]);
  assert.equal(code, 1, text);
  assert.match(
    text,
    /1 point\(s\) did not complete:\npoint 0 \(dataset=.*\): failed: .*nonexistent-ddpm-lab-images/,
  );
  const logPath = join(out, "tiny-fail", "logs", "point-0.log");
  assert.ok(text.includes(`log: ${logPath}`), text);
  assert.match(await Deno.readTextFile(logPath), /nonexistent-ddpm-lab-images/);
});

Deno.test("Ctrl-C stops a local sweep: the running point checkpoints, the rest are not started", async () => {
  const out = await Deno.makeTempDir();
  const file = await experimentFile({
    ...TINY,
    name: "tiny-interrupt",
    train: { ...TINY.train, epochs: 400 },
    sweep: { "schedule.timesteps": [4, 8] },
  });
  const sweep = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "mod.ts"), "sweep", file, "--out", out],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const log = join(out, "tiny-interrupt", "logs", "point-0.log");
  for (let i = 0; i < 600; i++) {
    if (/step 2\/1200/.test(await Deno.readTextFile(log).catch(() => ""))) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  sweep.kill("SIGINT");
  const { code, stdout } = await sweep.output();
  assert.equal(code, 130, new TextDecoder().decode(stdout));
  const { index } = (await readIndex(join(out, "tiny-interrupt")))!;
  assert.deepEqual(index.points.map((p) => p.status), ["interrupted", "pending"]);
  assert.match(await Deno.readTextFile(log), /interrupted at step \d+: checkpoint written/);
  // Run again, the interrupted point resumes from its checkpoint instead of starting over.
  const again = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "mod.ts"), "run", file, "--sweep-index", "0", "--out", out],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = again.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!/resuming at step [1-9]\d*/.test(text)) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  again.kill("SIGINT");
  reader.releaseLock();
  await again.stdout.cancel().catch(() => {});
  assert.equal((await again.status).code, 130, text);
  assert.match(text, /resuming the interrupted point at /);
  assert.match(text, /resuming at step [1-9]\d*/);
  const manifest = await readManifest(join(out, "tiny-interrupt", index.points[0].run));
  assert.equal(manifest?.resumedAt?.length, 1);
  await again.stderr.cancel();
});

const slurmMissing = await slurmUnavailable();
if (slurmMissing) console.log(`skipping the Slurm sweep test: ${slurmMissing}`);

Deno.test({
  name: "a three-point sweep runs through a one-node Slurm cluster on localhost",
  ignore: slurmMissing !== null,
  fn: async () => {
    const cluster = await startSlurmCluster();
    const previous = Deno.env.get("SLURM_CONF");
    Deno.env.set("SLURM_CONF", cluster.env.SLURM_CONF);
    try {
      const out = await Deno.makeTempDir();
      const file = await experimentFile({
        ...TINY,
        name: "tiny-slurm",
        train: { ...TINY.train, epochs: 1 },
        sweep: { "schedule.timesteps": [4, 6, 8] },
        launcher: { slurm: { cpus: 1, time: "00:10:00", extra: ["--comment=ddpm-lab-test"] } },
      });
      const started = performance.now();
      const { code, out: text } = await cli([
        "sweep",
        file,
        "--launcher",
        "slurm",
        "--jobs",
        "2",
        "--out",
        out,
        "--wait",
      ]);
      const seconds = (performance.now() - started) / 1000;
      console.log(`  slurm sweep of 3 tiny points: ${seconds.toFixed(1)} s`);
      assert.equal(code, 0, text);
      const { index } = (await readIndex(join(out, "tiny-slurm")))!;
      assert.equal(index.launcher, "slurm");
      assert.equal(index.slurm!.jobs.length, 1);
      assert.match(index.slurm!.jobs[0].id, /^[0-9]+$/);
      assert.deepEqual(index.slurm!.jobs[0].indices, [0, 1, 2]);
      assert.match(text, new RegExp(`submitted job ${index.slurm!.jobs[0].id}: points 0, 1, 2`));
      const script = await Deno.readTextFile(join(out, "tiny-slurm", index.slurm!.script));
      assert.match(script, /#SBATCH --cpus-per-task=1\n/);
      assert.match(script, /#SBATCH --comment=ddpm-lab-test\n/);
      for (const point of index.points) {
        assert.equal(point.status, "complete", point.run);
        const manifest = (await readManifest(join(out, "tiny-slurm", point.run)))!;
        assert.equal(manifest.summary.steps, 3);
        const log = await Deno.readTextFile(join(out, "tiny-slurm", point.log));
        assert.match(log, new RegExp(`== point ${point.index} of job ${index.slurm!.jobs[0].id}`));
        assert.match(log, /complete: /);
      }
      assert.deepEqual(
        index.points.map((p) => p.overrides["schedule.timesteps"]),
        [4, 6, 8],
      );
      // Submitting again submits nothing: every point is complete.
      const again = await cli(["sweep", file, "--launcher", "slurm", "--out", out]);
      assert.equal(again.code, 0, again.out);
      assert.match(again.out, /3 points \(3 complete, 0 running elsewhere or queued, 0 to run\)/);
      assert.doesNotMatch(again.out, /submitted job/);
    } finally {
      if (previous === undefined) Deno.env.delete("SLURM_CONF");
      else Deno.env.set("SLURM_CONF", previous);
      await cluster.stop();
    }
  },
});
