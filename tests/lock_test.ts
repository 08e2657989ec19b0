/**
 * The run-folder lock, with real processes: a second process for the same folder is refused
 * with the host and pid of the first, and the lock of a killed process is taken over.
 */
import assert from "node:assert/strict";
import { hostname } from "node:os";
import { join } from "node:path";
import { experimentFile, ROOT, TINY } from "./helpers.ts";
import { acquireRunLock, lockPath, RunLockedError, runLockHolder } from "../src/run/lock.ts";

/** Reads `stream` until `pattern` shows up; returns everything read so far. */
async function readUntil(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  pattern: RegExp,
): Promise<string> {
  let text = "";
  const decoder = new TextDecoder();
  while (!pattern.test(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`stream ended before ${pattern}: ${text}`);
    text += decoder.decode(value);
  }
  return text;
}

Deno.test("a second process is refused with the first's host and pid; a killed holder's lock is taken over", async () => {
  const dir = join(await Deno.makeTempDir(), "exp", "seed-0-abcdef12");
  const holder = join(await Deno.makeTempDir(), "hold.ts");
  await Deno.writeTextFile(
    holder,
    `import { acquireRunLock } from ${JSON.stringify(join(ROOT, "src/run/lock.ts"))};\n` +
      `await acquireRunLock(${JSON.stringify(dir)});\n` +
      `console.log("locked");\nsetInterval(() => {}, 1000);\n`,
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", holder],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.getReader();
  await readUntil(reader, /locked/);

  await assert.rejects(acquireRunLock(dir), (err: unknown) => {
    assert.ok(err instanceof RunLockedError);
    assert.match(err.message, new RegExp(`in use by pid ${child.pid} on ${hostname()} \\(since `));
    assert.equal(err.holder?.pid, child.pid);
    return true;
  });
  assert.equal((await runLockHolder(dir))?.pid, child.pid);

  child.kill("SIGKILL");
  await child.status;
  reader.releaseLock();
  await child.stdout.cancel();
  // The dead process's lock file is still there, naming it; nobody holds the lock.
  assert.match(await Deno.readTextFile(lockPath(dir)), new RegExp(`"pid":${child.pid}`));
  assert.equal(await runLockHolder(dir), null);

  const lines: string[] = [];
  const lock = await acquireRunLock(dir, { log: (l) => lines.push(l) });
  assert.equal(lines.length, 1);
  assert.match(lines[0], new RegExp(`taking over the stale lock of .*: pid ${child.pid} on `));
  assert.match(await Deno.readTextFile(lockPath(dir)), new RegExp(`"pid":${Deno.pid}`));
  // The same process asking again is refused too (one lock per folder, not per process).
  await assert.rejects(acquireRunLock(dir), RunLockedError);
  await lock.release();
  await assert.rejects(Deno.stat(lockPath(dir)), Deno.errors.NotFound);
  await (await acquireRunLock(dir)).release(); // free again, and no stale message this time
});

Deno.test("two `run` processes of the same config and seed: the second exits 2 naming the first", async () => {
  const out = await Deno.makeTempDir();
  const file = await experimentFile({ ...TINY, train: { ...TINY.train, epochs: 400 } });
  const args = ["run", "-A", join(ROOT, "mod.ts"), "run", file, "--out", out];
  const first = new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "piped" })
    .spawn();
  const reader = first.stdout.getReader();
  await readUntil(reader, /step 1\/1200/);
  const second = await new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "piped" })
    .output();
  const message = new TextDecoder().decode(second.stderr);
  assert.equal(second.code, 2, message);
  assert.match(
    message,
    new RegExp(`error: .*seed-0-[0-9a-f]{8} is in use by pid ${first.pid} on ${hostname()}`),
  );
  // The first run is untouched by the refusal: stop it, it checkpoints and says so.
  first.kill("SIGTERM");
  const rest = await readUntil(reader, /interrupted: /);
  assert.match(rest, /interrupted at step \d+: checkpoint written/);
  reader.releaseLock();
  await first.stdout.cancel();
  await first.stderr.cancel();
  assert.equal((await first.status).code, 130);
});
