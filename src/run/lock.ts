/**
 * One process per run folder. A run holds an exclusive `flock` on `.<run>.lock`, a file next to
 * its folder (so `--force` can clear the folder while holding it), and writes its host, pid and
 * command there. The kernel drops the lock when the process dies however it dies, so a lock file
 * whose lock can be taken is stale: its content then names the process that left it. On a
 * shared filesystem (NFS v4, Lustre) `flock` works across nodes.
 * @module
 */
import { basename, dirname, join } from "node:path";
import { hostname } from "node:os";
import { UserError } from "../errors.ts";

/** Who holds (or held) a run folder. */
export interface LockHolder {
  /** Host name of the process. */
  host: string;
  /** Its process id. */
  pid: number;
  /** ISO time it took the lock. */
  since: string;
  /** Its command line. */
  command: string;
}

/** A second process tried to run in a folder that a live process holds. */
export class RunLockedError extends UserError {
  /** The process that holds the folder (null when its lock file could not be read). */
  readonly holder: LockHolder | null;

  /** Builds the refusal for `dir`, naming the holder. */
  constructor(dir: string, holder: LockHolder | null) {
    const who = holder
      ? `pid ${holder.pid} on ${holder.host} (since ${holder.since}: ${holder.command})`
      : "another process";
    super(`${dir} is in use by ${who}`, {
      expected: "one process per run folder: wait for it to finish or stop it",
    });
    this.name = "RunLockedError";
    this.holder = holder;
  }
}

/** A held run-folder lock; `await using` releases it at the end of the scope. */
export interface RunLock extends AsyncDisposable {
  /** The lock file. */
  readonly path: string;
  /** Removes the lock file and drops the lock (idempotent). */
  release(): Promise<void>;
}

/** The lock file of a run folder: `.<folder>.lock` next to it. */
export function lockPath(dir: string): string {
  return join(dirname(dir), `.${basename(dir)}.lock`);
}

function parseHolder(text: string): LockHolder | null {
  try {
    const value = JSON.parse(text);
    return typeof value?.pid === "number" && typeof value?.host === "string" ? value : null;
  } catch {
    return null;
  }
}

/** This process, as a lock file records it. */
function currentHolder(): LockHolder {
  return {
    host: hostname(),
    pid: Deno.pid,
    since: new Date().toISOString(),
    command: [Deno.execPath(), ...Deno.args].join(" "),
  };
}

async function readHolder(path: string): Promise<LockHolder | null> {
  return parseHolder(await Deno.readTextFile(path).catch(() => ""));
}

/**
 * Takes the lock of run folder `dir` or throws a {@linkcode RunLockedError} naming the live
 * holder. A lock file left by a process that died is taken over, with a line to `options.log`
 * naming that process. Creates the parent folder when needed (and removes it again on release
 * when it is left empty).
 */
export async function acquireRunLock(
  dir: string,
  options: { log?: (line: string) => void } = {},
): Promise<RunLock> {
  const path = lockPath(dir);
  const parent = dirname(path);
  const createdParent = !(await Deno.stat(parent).then(() => true, () => false));
  await Deno.mkdir(parent, { recursive: true });
  // A holder that releases unlinks the file before closing it, so the inode locked here may
  // already be gone from `path`: then try again on the new file.
  for (let attempt = 0; attempt < 20; attempt++) {
    const file = await Deno.open(path, { read: true, write: true, create: true });
    if (!(await file.tryLock(true))) {
      const holder = await readHolder(path);
      file.close();
      throw new RunLockedError(dir, holder);
    }
    const onDisk = await Deno.stat(path).catch(() => null);
    const mine = await file.stat();
    if (onDisk === null || onDisk.ino !== mine.ino || onDisk.dev !== mine.dev) {
      file.close();
      continue;
    }
    const stale = await readHolder(path);
    if (stale) {
      options.log?.(
        `taking over the stale lock of ${dir}: pid ${stale.pid} on ${stale.host} ` +
          `(since ${stale.since}) no longer holds it (killed?)`,
      );
    }
    await file.truncate(0);
    await file.seek(0, Deno.SeekMode.Start);
    await file.write(new TextEncoder().encode(JSON.stringify(currentHolder()) + "\n"));
    let released = false;
    const release = async () => {
      if (released) return;
      released = true;
      await Deno.remove(path).catch(() => {});
      file.close();
      if (createdParent) await Deno.remove(parent).catch(() => {}); // only when empty
    };
    return { path, release, [Symbol.asyncDispose]: release };
  }
  throw new Error(`could not lock ${path}: it was replaced 20 times in a row`);
}

/**
 * Who holds run folder `dir` now, or null when nobody does (no lock file, or a stale one).
 * Takes and drops the lock for an instant to find out.
 */
export async function runLockHolder(dir: string): Promise<LockHolder | null> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(lockPath(dir), { read: true, write: true });
  } catch {
    return null;
  }
  try {
    if (await file.tryLock(true)) return null;
    return (await readHolder(lockPath(dir))) ??
      { host: "?", pid: 0, since: "?", command: "unknown" };
  } finally {
    file.close();
  }
}
