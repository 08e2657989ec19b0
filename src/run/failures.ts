/**
 * What a run says when it fails for a reason the user can act on: a loss that diverged, a full
 * disk, a folder it may not write. {@linkcode explainFailure} turns the error into a
 * {@linkcode RunFailure} whose message says what happened and at which step, what was kept (the
 * last checkpoint, the run folder marked failed, or nothing at all) and what to do, with the
 * command to run. Any other error is a bug, and is left as it is (the CLI prints its stack).
 * @module
 */
import { dirname, relative, resolve } from "node:path";
import type { LoadedExperiment } from "../config/mod.ts";
import { RunFailure } from "../errors.ts";
import { errorCode, formatBytes, WriteError } from "../io/files.ts";
import { LossDivergedError } from "../train/mod.ts";
import { resumeCommand, runCommandLine } from "./resume.ts";

/** Where a run was when it failed, kept current by the runner. */
export interface RunProgress {
  /** The experiment (its file and overrides make the commands to run). */
  loaded: LoadedExperiment;
  /** The outputs root. */
  outRoot: string;
  /** The run folder. */
  dir: string;
  /**
   * `none`: a new run whose folder was not created (or was removed again), so nothing was
   * written; `unchanged`: a resumed run's folder, not touched yet; `open`: the folder is being
   * written and a failure marks it failed.
   */
  folder: "none" | "unchanged" | "open";
  /** The step of the checkpoint on disk (the one the manifest's hashes describe), or null. */
  checkpointStep: number | null;
  /** The last training step done (steps before a resume count). */
  step: number;
  /** Steps of the whole run, once known. */
  totalSteps: number | null;
  /** Steps per epoch, once known. */
  perEpoch: number | null;
  /** What the run does after training (`sampling`, `the final evaluation`), once it does. */
  phase?: string;
}

/** The file-system failures {@linkcode explainFailure} explains, by error code. */
const FILE_PROBLEMS: Record<string, string> = {
  ENOSPC: "no space left on the device",
  EDQUOT: "the disk quota is exceeded",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EROFS: "the file system is read-only",
};

/** What each operation Deno names in its messages did, for "could not <verb> <path>". */
const VERBS: Record<string, string> = {
  mkdir: "create",
  remove: "remove",
  open: "open",
  rename: "write",
  writefile: "write",
  copy: "copy to",
};

/** A failed file operation: its code, the file (when the error names it) and the bytes needed. */
export interface FileProblem {
  /** `ENOSPC`, `EDQUOT`, `EACCES`, `EPERM` or `EROFS`. */
  code: string;
  /** The file or folder (a temporary file's name mapped back to the file it stood for). */
  path?: string;
  /** Bytes the write needed (a checkpoint: all its files), when known. */
  bytes?: number;
  /** The operation Deno names (`writefile`, `mkdir`, `open`, ...), when known. */
  operation?: string;
}

/** The {@linkcode FileProblem} of `err` (it or one of its causes), or null for another error. */
export function fileProblem(err: unknown): FileProblem | null {
  for (let e: unknown = err; e !== undefined && e !== null; e = (e as Error).cause) {
    const code = errorCode(e);
    if (code === undefined || !(code in FILE_PROBLEMS)) {
      if (!(e instanceof Error)) return null;
      continue;
    }
    if (e instanceof WriteError) return { code, path: e.path, bytes: e.bytes };
    // Deno: "Permission denied (os error 13): mkdir '/x/outputs/tiny'".
    const named = /: (\w+) '([^']+)'\s*$/.exec(e instanceof Error ? e.message : "");
    return {
      code,
      ...(named ? { operation: named[1], path: untemporary(named[2]) } : {}),
    };
  }
  return null;
}

/** `dir/.name.tmp-<pid>-<id>` (an atomic write's temporary file) -> `dir/name`. */
function untemporary(path: string): string {
  const match = /^(.*\/)\.(.+)\.tmp-\d+-[0-9a-f]{8}$/.exec(path);
  return match ? match[1] + match[2] : path;
}

/**
 * Free bytes on the file system of `path` (its closest existing folder) and where that file
 * system is mounted, from `df`; null when `df` cannot tell.
 */
export async function freeSpace(path: string): Promise<{ bytes: number; mount: string } | null> {
  let dir = resolve(path);
  while (!(await Deno.stat(dir).then((s) => s.isDirectory, () => false))) {
    if (dir === dirname(dir)) return null;
    dir = dirname(dir);
  }
  try {
    const out = await new Deno.Command("df", {
      args: ["-Pk", dir],
      stdout: "piped",
      stderr: "null",
    }).output();
    if (!out.success) return null;
    const fields = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!.split(/\s+/);
    const available = Number(fields[3]);
    if (!Number.isFinite(available)) return null;
    return { bytes: available * 1024, mount: fields.slice(5).join(" ") };
  } catch {
    return null;
  }
}

/** A number as `--set` writes it: `0.0001` as `1e-4`, `1000` as `1000`. */
function compact(x: number): string {
  const exp = x.toExponential();
  const plain = String(x);
  return exp.length < plain.length ? exp.replace("e+", "e") : plain;
}

/** `step 4 of 6 (epoch 2 of 2)`, or `step 4` when the plan is not known. */
function where(at: RunProgress): string {
  if (at.totalSteps === null || at.perEpoch === null || at.perEpoch === 0) return `step ${at.step}`;
  const epoch = Math.min(Math.ceil(Math.max(at.step, 1) / at.perEpoch), 1e9);
  const epochs = Math.ceil(at.totalSteps / at.perEpoch);
  return `step ${at.step} of ${at.totalSteps} (epoch ${epoch} of ${epochs})`;
}

/** What the run kept, for the `kept:` line. */
function keptLine(at: RunProgress): string {
  if (at.folder === "none") return "nothing: the run folder was not created";
  if (at.folder === "unchanged") return `the run folder as it was: ${at.dir}`;
  const checkpoint = at.checkpointStep === null
    ? "no checkpoint (it failed before writing the first one)"
    : `the checkpoint of step ${at.checkpointStep} (checkpoint/, intact)`;
  return `${checkpoint}; the run folder, marked failed: ${at.dir}`;
}

/** The command that continues the run (from its checkpoint) or starts it again. */
function againCommand(at: RunProgress): { line: string; resumes: boolean } {
  const { file, overrides } = at.loaded;
  const resumes = at.checkpointStep !== null && at.folder !== "none";
  return {
    line: resumes
      ? resumeCommand(file, { overrides, outRoot: at.outRoot })
      : runCommandLine(file, { overrides, outRoot: at.outRoot }),
    resumes,
  };
}

/** The diverged-loss explanation: the settings in use and the fields to change. */
function divergence(err: LossDivergedError, at: RunProgress): RunFailure {
  const { config, file, overrides } = at.loaded;
  const opt = config.optimizer;
  const decay = opt.lrDecay === "cosine" ? `, cosine decay to ${opt.minLr}` : " (constant)";
  const used = [
    `optimizer.lr ${opt.lr}${decay}`,
    opt.warmupSteps > 0
      ? `optimizer.warmupSteps ${opt.warmupSteps}`
      : "optimizer.warmupSteps 0 (no warm-up)",
    opt.clipGradNorm === undefined
      ? "optimizer.clipGradNorm unset (no clipping)"
      : `optimizer.clipGradNorm ${opt.clipGradNorm}`,
    `loss.kind ${config.loss.kind}`,
    `train.batchSize ${config.train.batchSize}`,
  ];
  const total = at.totalSteps ?? err.step;
  const warmup = opt.warmupSteps > 0
    ? opt.warmupSteps * 2
    : Math.max(10, Math.min(1000, Math.round(total / 20)));
  const sets = [
    `optimizer.lr=${compact(opt.lr / 10)}`,
    `optimizer.warmupSteps=${warmup}`,
    `optimizer.clipGradNorm=${opt.clipGradNorm === undefined ? 1 : compact(opt.clipGradNorm / 2)}`,
  ];
  const command = runCommandLine(file, {
    overrides: overrides.filter((o) => !sets.some((s) => o.startsWith(s.split("=")[0] + "="))),
    outRoot: at.outRoot,
    flags: sets.flatMap((s) => ["--set", s]),
  });
  const resume = at.checkpointStep === null
    ? ""
    : ` (--resume would repeat the same steps from step ${at.checkpointStep}, bit for bit, ` +
      "and diverge again)";
  return new RunFailure(
    `the loss diverged: it became ${err.loss} at ${where({ ...at, step: err.step })}\n` +
      `  in use: ${used.join(", ")}`,
    {
      kept: keptLine(at),
      todo: [
        "lower optimizer.lr, add optimizer.warmupSteps or set optimizer.clipGradNorm; each " +
        `changes the config, so the run starts over in a new folder${resume}. All three, e.g.:`,
        command,
      ],
      cause: err,
    },
  );
}

/** The first line of a file-system failure, and the folder whose space or rights to fix. */
async function fileWhat(
  problem: FileProblem,
  options: { phase: string; fallback: string },
): Promise<{ what: string; place: string; full: boolean }> {
  const path = problem.path;
  const full = problem.code === "ENOSPC" || problem.code === "EDQUOT";
  const verb = VERBS[problem.operation ?? ""] ?? "write";
  let what = `${FILE_PROBLEMS[problem.code]}: could not ${verb} ${path ?? "a file"}` +
    options.phase;
  let place = path ? dirname(path) : options.fallback;
  if (full) {
    const free = await freeSpace(place);
    const facts = [];
    if (problem.bytes !== undefined) {
      const it = path?.includes("/checkpoint/") ? "the checkpoint" : "the file";
      facts.push(`${it} needs ${formatBytes(problem.bytes)}`);
    }
    if (free) {
      facts.push(`${formatBytes(free.bytes)} free on ${free.mount}`);
      place = free.mount;
    }
    if (facts.length > 0) what += `: ${facts.join(", ")}`;
  }
  return { what, place, full };
}

/** The full-disk and permission explanations of a run. */
async function fileFailure(
  problem: FileProblem,
  err: unknown,
  at: RunProgress,
): Promise<RunFailure> {
  const path = problem.path;
  const inOutputs = path !== undefined &&
    !relative(resolve(at.outRoot), resolve(path)).startsWith("..");
  const phase = at.folder !== "open" || at.step === 0
    ? ""
    : at.phase
    ? ` while ${at.phase}, after ${where(at)}`
    : ` at ${where(at)}`;
  const { what, place, full } = await fileWhat(problem, {
    phase,
    fallback: resolve(at.outRoot),
  });
  const again = againCommand(at);
  // Another outputs root starts over: offered only when there is no checkpoint to continue.
  const move = inOutputs && !again.resumes;
  const fix = full
    ? `free space on ${place}${move ? " (or put the runs on a disk with room: --out DIR)" : ""}`
    : `make ${place} writable for this user (ls -ld ${place})` +
      (move ? ", or put the runs in a folder you can write: --out DIR" : "");
  const then = again.resumes
    ? `then continue from step ${at.checkpointStep} with:`
    : at.folder === "open"
    ? "then run it again (there is no checkpoint to continue from):"
    : "then run it again:";
  return new RunFailure(what, {
    kept: keptLine(at),
    todo: [`${fix}, ${then}`, again.line],
    cause: err,
  });
}

/**
 * For commands other than a run (`sample`, `eval`, `sweep`, `report`, ...): the
 * {@linkcode RunFailure} of a full disk or a folder that cannot be written, or null for any
 * other error. Their files are written whole or not at all, so running the command again once
 * there is room is all it takes.
 */
export async function explainCommandFailure(err: unknown): Promise<RunFailure | null> {
  if (err instanceof RunFailure) return err;
  const problem = fileProblem(err);
  if (!problem) return null;
  const { what, place, full } = await fileWhat(problem, { phase: "", fallback: Deno.cwd() });
  const fix = full ? `free space on ${place}` : `make ${place} writable for this user`;
  return new RunFailure(what, {
    kept: "every file written so far is whole (each goes to a temporary file, then is renamed)",
    todo: [`${fix}, then run the same command again`],
    cause: err,
  });
}

/**
 * The {@linkcode RunFailure} that explains `err` for a run at `at`, or null when `err` is not
 * one the user can act on (a bug: the caller rethrows it). A {@linkcode RunFailure} already
 * explained is returned as it is.
 */
export async function explainFailure(
  err: unknown,
  at: RunProgress,
): Promise<RunFailure | null> {
  if (err instanceof RunFailure) return err;
  if (err instanceof LossDivergedError) return divergence(err, at);
  const problem = fileProblem(err);
  if (problem) return await fileFailure(problem, err, at);
  return null;
}

/**
 * `failure` with a note that the run folder could not be marked failed (its manifest still says
 * `running`; `--resume` and a new run both take such a folder over).
 */
export function unmarkedFailure(failure: RunFailure, why: unknown): RunFailure {
  const reason = why instanceof Error ? why.message.split("\n")[0] : String(why);
  const kept = (failure.kept ?? "").replace(
    /; the run folder, marked failed: (.*)$/,
    "; the run folder $1, which could not be marked failed (manifest.json still says " +
      `running: ${reason})`,
  );
  return new RunFailure(failure.what, { kept, todo: [...failure.todo], cause: failure.cause });
}
