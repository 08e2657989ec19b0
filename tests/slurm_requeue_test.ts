/**
 * A sweep point that outlives its Slurm time limit, on the one-node test cluster: the job asks
 * for SIGUSR2 before its 1-minute limit, the run checkpoints and requeues itself, the requeued
 * job resumes it, and its run folder ends byte-identical to a run that was never stopped;
 * `--wait` reports the requeue, and a point whose job fails is listed with what to do.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { cli, experimentFile, TEST_CACHE, TINY } from "./helpers.ts";
import { loadExperiment } from "../src/config/mod.ts";
import { readManifest } from "../src/run/manifest.ts";
import { runExperiment } from "../src/run/runner.ts";
import { loadSweepPoint, readIndex } from "../src/sweep/mod.ts";
import { slurmUnavailable, startSlurmCluster } from "./slurm_cluster.ts";

/** Seconds per training step of TINY on this machine now (a few steps, the first left out). */
async function secondsPerStep(): Promise<number> {
  const file = await experimentFile({
    ...TINY,
    train: { ...TINY.train, epochs: 6, checkpointEvery: 1000 },
  });
  const times: number[] = [];
  await runExperiment(await loadExperiment(file), {
    outRoot: await Deno.makeTempDir(),
    log: () => {},
    cacheDir: TEST_CACHE,
    onStep: () => times.push(performance.now()),
  });
  return (times.at(-1)! - times[1]) / 1000 / (times.length - 2);
}

const slurmMissing = await slurmUnavailable();
if (slurmMissing) console.log(`ignoring the Slurm requeue test: ${slurmMissing}`);

Deno.test({
  name:
    "a point signalled before its time limit checkpoints, requeues, resumes, and ends byte-identical",
  ignore: slurmMissing !== null,
  fn: async () => {
    const started = performance.now();
    // Slurm sends the warning 25 s before the 60-s limit at its next 30-s check: 5 to 35 s into
    // the job. 45 s of training at today's speed outlasts it (the run here beside it only
    // slows it down).
    const perStep = await secondsPerStep();
    const epochs = Math.max(10, Math.ceil(45 / perStep / 3));
    const cluster = await startSlurmCluster({ requeueDelaySeconds: 10 });
    const previous = Deno.env.get("SLURM_CONF");
    Deno.env.set("SLURM_CONF", cluster.env.SLURM_CONF);
    try {
      const out = await Deno.makeTempDir();
      const file = await experimentFile({
        ...TINY,
        name: "tiny-requeue",
        train: { ...TINY.train, epochs, logEvery: 20, checkpointEvery: 100000 },
        sweep: {
          dataset: [TINY.dataset, { kind: "folder", path: "/nonexistent-ddpm-lab-images" }],
        },
        launcher: { slurm: { cpus: 1, time: "00:01:00", signal: 25 } },
      });
      // The same point, never stopped, trained here meanwhile.
      const point = await loadSweepPoint(file, { index: 0 });
      const reference = runExperiment(point, {
        outRoot: await Deno.makeTempDir(),
        log: () => {},
        cacheDir: TEST_CACHE,
      });
      const sweep = cli(["sweep", file, "--launcher", "slurm", "--out", out, "--wait"]);
      // Once requeued, the job gets 10 minutes: one requeue is what this test is about.
      let done = false;
      const raise = (async () => {
        while (!done) {
          await new Promise((r) => setTimeout(r, 500));
          const index = (await readIndex(join(out, "tiny-requeue")))?.index;
          const run = index
            ? await readManifest(join(out, "tiny-requeue", index.points[0].run))
            : null;
          const job = run?.requeues?.[0]?.job;
          if (job) {
            await new Deno.Command("scontrol", {
              args: ["update", `JobId=${job}`, "TimeLimit=10"],
              env: cluster.env,
            }).output();
            return job;
          }
        }
        return null;
      })();
      const { code, out: text } = await sweep;
      done = true;
      const job = await raise;
      const whole = await reference;
      const seconds = (performance.now() - started) / 1000;
      console.log(
        `  ${epochs * 3} steps at ${perStep.toFixed(3)} s/step, requeued job ${job}: ` +
          `${seconds.toFixed(0)} s in all`,
      );
      // Point 1's dataset does not exist: it fails, and the sweep says so with what to do.
      assert.equal(code, 1, text);
      assert.match(text, /point 1 \(dataset=.*\): failed: .*nonexistent-ddpm-lab-images/);
      assert.match(text, /what to do: .*run the same sweep command again/);
      // Point 0: warned, checkpointed, requeued, resumed by the requeued job, complete.
      assert.match(text, /point 0 \(dataset=.*\) was requeued \(interrupted\)/);
      assert.match(
        text,
        /point 0 \(dataset=.*\): requeued 1 time near its time limit, resumed each time; complete/,
      );
      const { index } = (await readIndex(join(out, "tiny-requeue")))!;
      assert.equal(index.points[0].status, "complete");
      assert.equal(index.points[0].requeues, 1);
      const dir = join(out, "tiny-requeue", index.points[0].run);
      const manifest = (await readManifest(dir))!;
      assert.equal(manifest.requeues?.length, 1);
      assert.equal(manifest.resumedAt?.length, 1);
      const { step } = manifest.requeues![0];
      assert.ok(step > 0 && step < epochs * 3, `requeued at step ${step} of ${epochs * 3}`);
      const log = await Deno.readTextFile(join(out, "tiny-requeue", index.points[0].log));
      assert.match(log, /SIGUSR2 \(Slurm: the time limit is near\)/);
      assert.doesNotMatch(log, /Debugger listening/, "no inspector (what SIGUSR1 would open)");
      assert.match(
        log,
        new RegExp(`requeued Slurm job ${job}: it resumes from the checkpoint of step ${step}`),
      );
      assert.match(log, /resuming the interrupted point at .* \(Slurm restart 1\)/);
      assert.match(log, new RegExp(`resuming at step ${step} of ${epochs * 3}`));
      assert.match(log, /complete: /);
      // Byte for byte the run that was never stopped.
      assert.equal(manifest.summary.steps, epochs * 3);
      assert.deepEqual(manifest.artifacts, whole.manifest!.artifacts);
      const script = await Deno.readTextFile(join(out, "tiny-requeue", index.slurm!.script));
      assert.match(script, /#SBATCH --signal=B:USR2@25\n#SBATCH --requeue\n/);
      assert.match(script, /\nexec \S+ run -A .* --requeue\n/);
    } finally {
      if (previous === undefined) Deno.env.delete("SLURM_CONF");
      else Deno.env.set("SLURM_CONF", previous);
      await cluster.stop();
    }
  },
});
