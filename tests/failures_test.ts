/**
 * Failures a user can act on, as the command line prints them: a tiny run made to diverge, a
 * full disk (a small tmpfs) and a folder it may not write, a dataset that vanishes while it is
 * read, an engine that cannot start. Each says what happened, what was kept and what to do,
 * without a stack trace, and leaves no half-written run folder; `--resume` continues a failed
 * run from its checkpoint to the bytes of a run that never failed.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { cli, experimentFile, ROOT, runFile, TINY } from "./helpers.ts";
import { RunFailure } from "../src/errors.ts";
import { WriteError, writeFilesAtomic } from "../src/io/files.ts";
import { readManifest } from "../src/run/manifest.ts";
import { explainFailure, fileProblem, type RunProgress } from "../src/run/failures.ts";
import { loadExperiment } from "../src/config/mod.ts";
import { listRuns } from "../src/run/list.ts";
import { keptLines } from "../src/run/logs.ts";
import { encodePng } from "../src/io/image.ts";

/** Runs `deno run -A mod.ts <args>` as a child process, optionally wrapped by `wrap`. */
async function child(
  args: string[],
  wrap: string[] = [],
): Promise<{ code: number; out: string }> {
  const argv = [...wrap, Deno.execPath(), "run", "-A", join(ROOT, "mod.ts"), ...args];
  const out = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, out: (dec.decode(out.stdout) + dec.decode(out.stderr)).trimEnd() };
}

/** The lines of a message that come from a stack trace. */
const stackLines = (text: string) => text.split("\n").filter((l) => /^\s+at /.test(l));

/** Every file below `dir` whose name marks an atomic write's temporary file. */
async function temporaries(dir: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (d: string) => {
    for await (const e of Deno.readDir(d)) {
      if (e.isDirectory) await walk(join(d, e.name));
      else if (/\.tmp-\d+-/.test(e.name)) found.push(join(d, e.name));
    }
  };
  await walk(dir);
  return found;
}

/** Adam at lr 9.9 on the L2 loss: the loss of TINY is Infinity at step 2. */
const DIVERGING = { ...TINY, loss: { kind: "l2" }, optimizer: { lr: 9.9 } };

Deno.test("a diverging loss: the step, the settings in use, what to change; no stack trace", async () => {
  const file = await experimentFile(DIVERGING);
  const out = await Deno.makeTempDir();
  const { code, out: text } = await cli(["run", file, "--out", out]);
  assert.equal(code, 1, text);
  assert.deepEqual(stackLines(text), [], text);
  const error = text.slice(text.indexOf("error: "));
  assert.match(
    error,
    /^error: the loss diverged: it became Infinity at step 2 of 6 \(epoch 1 of 2\)\n/,
  );
  assert.match(
    error,
    /\n {2}in use: optimizer\.lr 9\.9 \(constant\), optimizer\.warmupSteps 0 \(no warm-up\), optimizer\.clipGradNorm unset \(no clipping\), loss\.kind l2, train\.batchSize 8\n/,
  );
  assert.match(
    error,
    /\n {2}kept: no checkpoint \(it failed before writing the first one\); the run folder, marked failed: .*tiny\/seed-0-[0-9a-f]{8}\n/,
  );
  assert.match(
    error,
    /\n {4}deno task run \S+exp\.json --out \S+ --set optimizer\.lr=0\.99 --set optimizer\.warmupSteps=10 --set optimizer\.clipGradNorm=1$/,
  );
  const [run] = await listRuns(out);
  assert.equal(run.manifest.status, "failed");
  assert.match(run.manifest.error!, /^the loss diverged: it became Infinity at step 2/);
  assert.deepEqual(await temporaries(out), []);
  // No checkpoint to continue: --resume says so (exit 2) and leaves the folder as it was.
  const resumed = await cli(["run", file, "--out", out, "--resume"]);
  assert.equal(resumed.code, 2, resumed.out);
  assert.match(
    resumed.out,
    /--resume: the run at \S+ failed before writing any checkpoint \(the loss diverged: .*\): there is nothing to continue \(expected a run with a checkpoint \(run it again without --resume: it starts over\)\)/,
  );
  assert.equal((await readManifest(run.dir))!.status, "failed");
  // DDPM_LAB_DEBUG=1 shows where it came from.
  Deno.env.set("DDPM_LAB_DEBUG", "1");
  try {
    const debug = await cli(["run", file, "--out", out]);
    assert.equal(debug.code, 1);
    assert.ok(stackLines(debug.out).length > 0, "a stack trace");
    assert.match(debug.out, /caused by: LossDivergedError: loss became Infinity at step 2/);
  } finally {
    Deno.env.delete("DDPM_LAB_DEBUG");
  }
});

Deno.test("a loss that diverges after a checkpoint: the checkpoint is named, and why --resume would not help", async () => {
  const file = await experimentFile(DIVERGING);
  const out = await Deno.makeTempDir();
  // Stopped (Ctrl-C) after step 1: a checkpoint of step 1, then resumed into the divergence.
  const controller = new AbortController();
  const stopped = await runFile(file, {
    outRoot: out,
    signal: controller.signal,
    onStep: ({ step }) => step === 1 && controller.abort(),
  });
  assert.equal(stopped.status, "interrupted");
  const { code, out: text } = await cli(["run", file, "--out", out, "--resume"]);
  assert.equal(code, 1, text);
  assert.match(
    text,
    /kept: the checkpoint of step 1 \(checkpoint\/, intact\); the run folder, marked failed/,
  );
  assert.match(
    text,
    /--resume would repeat the same steps from step 1, bit for bit, and diverge again/,
  );
});

/** Mounts a tmpfs of `size` at a new folder; null when this process may not mount. */
async function smallDisk(size: string): Promise<string | null> {
  const dir = await Deno.makeTempDir({ prefix: "ddpm-full-" });
  const out = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir],
    stdout: "null",
    stderr: "null",
  }).output().catch(() => null);
  if (out?.success) return dir;
  await Deno.remove(dir);
  return null;
}

async function unmount(dir: string): Promise<void> {
  await new Deno.Command("umount", { args: [dir] }).output();
  await Deno.remove(dir, { recursive: true });
}

const probe = Deno.uid() === 0 ? await smallDisk("64k") : null;
if (probe) await unmount(probe);
const noTmpfs = probe === null ? "mounting a tmpfs needs root (CAP_SYS_ADMIN)" : null;
if (noTmpfs) console.log(`ignoring the full-disk test: ${noTmpfs}`);

Deno.test({
  name:
    "a full disk: the file, the space needed and free, the checkpoint kept; --resume then gives the same bytes",
  ignore: noTmpfs !== null,
  fn: async () => {
    const file = await experimentFile(TINY);
    const whole = await runFile(file);
    // Room for the first checkpoint (step 3), not for the second one beside it.
    const disk = (await smallDisk("1536k"))!;
    try {
      const { code, out: text } = await cli(["run", file, "--out", disk]);
      assert.equal(code, 1, text);
      assert.deepEqual(stackLines(text), [], text);
      const dir = join(disk, "tiny", whole.dir.split("/").at(-1)!);
      assert.match(
        text,
        new RegExp(
          `error: no space left on the device: could not write ${dir}/checkpoint/` +
            `(model|optimizer)\\.safetensors at step 6 of 6 \\(epoch 2 of 2\\): the checkpoint ` +
            `needs 91\\d\\.\\d KiB, \\d+\\.\\d KiB free on ${disk}\\n`,
        ),
      );
      assert.match(text, /kept: the checkpoint of step 3 \(checkpoint\/, intact\)/);
      assert.match(
        text,
        new RegExp(
          `to do: free space on ${disk}, then continue from step 3 with:\\n {4}` +
            `deno task run \\S+exp\\.json --out ${disk} --resume$`,
        ),
      );
      assert.deepEqual(await temporaries(disk), [], "no temporary file left");
      const manifest = (await readManifest(dir))!;
      assert.equal(manifest.status, "failed");
      assert.match(manifest.error!, /^no space left on the device/);
      const state = JSON.parse(await Deno.readTextFile(join(dir, "checkpoint", "state.json")));
      assert.deepEqual(state, { step: 3, epoch: 0 }, "the checkpoint of step 3, whole");
      // Room again: --resume continues from step 3 to the bytes of a run that never failed.
      await new Deno.Command("mount", { args: ["-o", "remount,size=8m", disk] }).output();
      const resumed = await cli(["run", file, "--out", disk, "--resume"]);
      assert.equal(resumed.code, 0, resumed.out);
      assert.match(resumed.out, /resuming at step 3 of 6/);
      const after = (await readManifest(dir))!;
      assert.equal(after.status, "complete");
      assert.deepEqual(after.artifacts, (await readManifest(whole.dir))!.artifacts);
      assert.equal(after.summary.minLoss, (await readManifest(whole.dir))!.summary.minLoss);
    } finally {
      await unmount(disk);
    }
  },
});

Deno.test("a checkpoint is written whole or not at all; a metrics line cut short is dropped on resume", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(join(dir, "a"), "old a");
  // The second file cannot be written (its folder does not exist): the first keeps its bytes.
  const err = await writeFilesAtomic([
    { path: join(dir, "a"), data: "new a" },
    { path: join(dir, "missing", "b"), data: "new b" },
  ]).catch((e) => e);
  assert.ok(err instanceof WriteError);
  assert.equal(err.path, join(dir, "missing", "b"));
  assert.equal(err.bytes, 10);
  assert.equal(await Deno.readTextFile(join(dir, "a")), "old a");
  assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["a"]);
  assert.deepEqual(
    fileProblem(
      new WriteError("/x/y", {
        bytes: 1,
        cause: Object.assign(
          new Error("No space left on device (os error 28): writefile '/x/.y.tmp-1-0123abcd'"),
          { code: "ENOSPC" },
        ),
      }),
    ),
    { code: "ENOSPC", path: "/x/y", bytes: 1 },
  );
  assert.deepEqual(
    fileProblem(new Error("Permission denied (os error 13): open '/o/.seed-0-1.lock'")),
    { code: "EACCES", operation: "open", path: "/o/.seed-0-1.lock" },
  );
  const metrics = join(dir, "metrics.jsonl");
  await Deno.writeTextFile(metrics, '{"step":1,"loss":1}\n{"step":2,"loss":2}\n{"step":3,"lo');
  assert.equal(await keptLines(metrics, 5), '{"step":1,"loss":1}\n{"step":2,"loss":2}\n');
});

Deno.test("a full disk after training names the phase; a bug is left to its stack trace", async () => {
  const loaded = await loadExperiment(await experimentFile(TINY));
  const at: RunProgress = {
    loaded,
    outRoot: "/o",
    dir: "/o/tiny/seed-0-12345678",
    folder: "open",
    checkpointStep: 6,
    step: 6,
    totalSteps: 6,
    perEpoch: 3,
    phase: "sampling",
  };
  const full = Object.assign(new Error("No space left on device (os error 28)"), {
    code: "ENOSPC",
  });
  const failure = await explainFailure(
    new WriteError("/o/tiny/seed-0-12345678/samples.png", { bytes: 2048, cause: full }),
    at,
  );
  assert.ok(failure instanceof RunFailure);
  assert.match(
    failure.message,
    /^no space left on the device: could not write \/o\/tiny\/seed-0-12345678\/samples\.png while sampling, after step 6 of 6 \(epoch 2 of 2\): the file needs 2\.0 KiB/,
  );
  assert.match(
    failure.message,
    /kept: the checkpoint of step 6 \(checkpoint\/, intact\); the run folder, marked failed/,
  );
  assert.match(
    failure.message,
    /then continue from step 6 with:\n {4}deno task run \S+ --out \/o --resume$/,
  );
  assert.equal(await explainFailure(new TypeError("x is undefined"), at), null);
});

/** Runs `args` with the DAC override capability dropped when root (so that modes apply). */
const asUser = Deno.uid() === 0
  ? ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
  : [];

Deno.test("a folder it may not write: which one, nothing created, what to do", async () => {
  const file = await experimentFile(TINY);
  const out = await Deno.makeTempDir();
  await Deno.chmod(out, 0o555);
  try {
    const { code, out: text } = await child(["run", file, "--out", out], asUser);
    assert.equal(code, 1, text);
    assert.deepEqual(stackLines(text), [], text);
    assert.match(text, new RegExp(`error: permission denied: could not create ${out}/tiny\\n`));
    assert.match(text, /kept: nothing: the run folder was not created/);
    assert.match(
      text,
      new RegExp(
        `to do: make ${out} writable for this user \\(ls -ld ${out}\\), or put the runs in a ` +
          `folder you can write: --out DIR, then run it again:\\n {4}deno task run \\S+ --out ${out}$`,
      ),
    );
    assert.deepEqual([...Deno.readDirSync(out)], []);
  } finally {
    await Deno.chmod(out, 0o755);
  }
});

Deno.test("a checkpoint folder it may not write mid-run: the failure names it; the earlier checkpoint is kept", async () => {
  const file = await experimentFile({ ...TINY, train: { ...TINY.train, epochs: 3 } });
  const out = await Deno.makeTempDir();
  const controller = new AbortController();
  const stopped = await runFile(file, {
    outRoot: out,
    signal: controller.signal,
    onStep: ({ step }) => step === 2 && controller.abort(),
  });
  const checkpoint = join(stopped.dir, "checkpoint");
  await Deno.chmod(checkpoint, 0o555);
  try {
    const { code, out: text } = await child(["run", file, "--out", out, "--resume"], asUser);
    assert.equal(code, 1, text);
    assert.deepEqual(stackLines(text), [], text);
    assert.match(
      text,
      new RegExp(
        `error: permission denied: could not write ${checkpoint}/model\\.safetensors at step 3 of 9 \\(epoch 1 of 3\\)\\n`,
      ),
    );
    assert.match(
      text,
      /kept: the checkpoint of step 2 \(checkpoint\/, intact\); the run folder, marked failed/,
    );
    assert.match(
      text,
      new RegExp(
        `to do: make ${checkpoint} writable for this user \\(ls -ld ${checkpoint}\\), then continue from step 2 with:\\n {4}deno task run \\S+ --out ${out} --resume$`,
      ),
    );
    assert.equal((await readManifest(stopped.dir))!.status, "failed");
  } finally {
    await Deno.chmod(checkpoint, 0o755);
  }
  // Writable again: it continues.
  const resumed = await runFile(file, { outRoot: out, resume: true });
  assert.equal(resumed.status, "complete");
});

Deno.test("a dataset folder that vanishes while it is read: said so, nothing written", async () => {
  const images = await Deno.makeTempDir();
  // Random pixels: a content hash no decoded cache has seen.
  const pixels = crypto.getRandomValues(new Uint8Array(12 * 12 * 3));
  for (let i = 0; i < 24; i++) {
    pixels[0] = i;
    await Deno.writeFile(
      join(images, `face-${i}.png`),
      await encodePng({ width: 12, height: 12, data: pixels }),
    );
  }
  const file = await experimentFile({ ...TINY, dataset: { kind: "folder", path: images } });
  const out = await Deno.makeTempDir();
  const err = await runFile(file, {
    outRoot: out,
    progress: {
      update: (phase, done) => {
        if (phase === "data" && done === 1) Deno.removeSync(images, { recursive: true });
      },
    },
  }).catch((e) => e);
  assert.ok(err instanceof RunFailure, String(err));
  assert.match(
    err.message,
    new RegExp(
      `^the dataset ${images} vanished while it was being read \\(\\d+ of 24 files read\\)\\n`,
    ),
  );
  assert.match(
    err.message,
    /kept: nothing: the decoded cache was not written and no run folder was created/,
  );
  assert.match(err.message, new RegExp(`to do: check that ${images} is there and complete`));
  assert.deepEqual([...Deno.readDirSync(out)], [], "no run folder");
});

Deno.test("an engine that cannot start: what it needs, what to run instead, nothing written", async () => {
  const file = await experimentFile({ ...TINY, backend: "tensorflow" });
  const out = await Deno.makeTempDir();
  const { code, out: text } = await cli(["run", file, "--out", out]);
  assert.equal(code, 2, text);
  assert.deepEqual(stackLines(text), [], text);
  assert.match(
    text,
    /error: backend: the tensorflow backend could not be loaded \(.*not installed/,
  );
  assert.match(
    text,
    /--set backend=wasm \(the default\), cpu, webgpu or auto on this machine; nothing was written\)$/,
  );
  assert.deepEqual([...Deno.readDirSync(out)], []);
});
