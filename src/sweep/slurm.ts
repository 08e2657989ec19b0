/**
 * The Slurm launcher: an `sbatch` array script (one array task per point, each running
 * `run <file> --sweep-index $SLURM_ARRAY_TASK_ID` against the shared outputs folder), its
 * submission, and following the jobs with `squeue` and `sacct`.
 * @module
 */
import type { SlurmConfig } from "../../schemas/experiment.ts";
import { RunFailure, UserError } from "../errors.ts";
import { pointCommand, shellQuote } from "./command.ts";
import { compressIndices } from "./points.ts";

/** What the array script runs. */
export interface ScriptOptions {
  /** Job name. */
  name: string;
  /** The experiment file. */
  file: string;
  /** Outputs root of the runs (absolute in the script). */
  outRoot: string;
  /** The sweep's `--set` overrides. */
  sets: readonly string[];
  /** Folder of the array tasks' logs (`point-<index>.log`). */
  logDir: string;
  /** Folder the tasks start in (relative `--set dataset.path` values are relative to it). */
  cwd: string;
}

/**
 * Seconds of a Slurm time (`--time`): `minutes`, `minutes:seconds`, `hours:minutes:seconds`,
 * `days-hours`, `days-hours:minutes` or `days-hours:minutes:seconds`; null when it is none of
 * these.
 */
export function slurmSeconds(time: string): number | null {
  const dayMatch = /^(\d+)-(.+)$/.exec(time);
  const parts = (dayMatch ? dayMatch[2] : time).split(":");
  if (parts.length > 3 || parts.some((p) => !/^\d+$/.test(p))) return null;
  const n = parts.map(Number);
  if (dayMatch) {
    const [h, m = 0, s = 0] = n;
    return ((Number(dayMatch[1]) * 24 + h) * 60 + m) * 60 + s;
  }
  if (n.length === 1) return n[0] * 60;
  if (n.length === 2) return n[0] * 60 + n[1];
  return (n[0] * 60 + n[1]) * 60 + n[2];
}

/** Warning seconds when `launcher.slurm.signal` is not given and `time` is 20 minutes or more. */
export const DEFAULT_SIGNAL_SECONDS = 300;

/**
 * The seconds before the time limit at which Slurm sends SIGUSR2 (`launcher.slurm.signal`, or
 * its default: 300, a quarter of a `time` under 20 minutes); 0 for none. Throws a
 * {@linkcode UserError} when the warning would come at the start (not shorter than `time`).
 */
export function warningSeconds(slurm: SlurmConfig): number {
  const limit = slurm.time === undefined ? null : slurmSeconds(slurm.time);
  if (slurm.signal === undefined) {
    return limit === null
      ? DEFAULT_SIGNAL_SECONDS
      : Math.min(DEFAULT_SIGNAL_SECONDS, Math.floor(limit / 4));
  }
  if (limit !== null && slurm.signal > 0 && slurm.signal >= limit) {
    throw new UserError(
      `launcher.slurm.signal ${slurm.signal} s is not shorter than launcher.slurm.time ` +
        `${slurm.time} (${limit} s): the warning would come as the point starts`,
      {
        path: "launcher.slurm.signal",
        expected: `a few minutes under the time limit (Slurm may send it up to a minute early), ` +
          `e.g. ${Math.floor(limit / 4)}, or 0 for no warning`,
      },
    );
  }
  return slurm.signal;
}

/**
 * The `sbatch` array script of a sweep: resources from `launcher.slurm`, one task per point.
 * The warning is SIGUSR2, not Slurm's customary SIGUSR1: on SIGUSR1 Deno opens its inspector
 * (as Node does), a debugger port on the compute node.
 * The point replaces the shell (`exec`), so Slurm's signals reach the run itself and the job's
 * exit status is the run's; with a warning ({@linkcode warningSeconds}) the job asks for
 * SIGUSR2 before its time limit and may be requeued, and the run requeues itself on it.
 */
export function sbatchScript(slurm: SlurmConfig, options: ScriptOptions): string {
  const warning = warningSeconds(slurm);
  const directives = [
    `--job-name=${options.name}`,
    `--output=${options.logDir}/point-%a.log`,
    "--open-mode=append",
    ...(slurm.partition ? [`--partition=${slurm.partition}`] : []),
    ...(slurm.gpus !== undefined ? [`--gpus=${slurm.gpus}`] : []),
    ...(slurm.cpus !== undefined ? [`--cpus-per-task=${slurm.cpus}`] : []),
    ...(slurm.memory ? [`--mem=${slurm.memory}`] : []),
    ...(slurm.time ? [`--time=${slurm.time}`] : []),
    ...(warning > 0 ? [`--signal=B:USR2@${warning}`, "--requeue"] : []),
    ...slurm.extra,
  ];
  const command = pointCommand(options.file, {
    index: "@INDEX@",
    outRoot: options.outRoot,
    sets: options.sets,
    requeue: warning > 0,
  }).map(shellQuote).join(" ").replace("@INDEX@", '"$SLURM_ARRAY_TASK_ID"');
  return [
    "#!/bin/bash",
    `# ddpm-lab sweep ${options.name}: one array task per point (deno task sweep ${options.file})`,
    ...directives.map((d) => `#SBATCH ${d}`),
    "",
    "set -euo pipefail",
    ...slurm.setup,
    `echo "== point $SLURM_ARRAY_TASK_ID of job $SLURM_ARRAY_JOB_ID on $(hostname) at $(date -Is)` +
    ` (restart \${SLURM_RESTART_COUNT:-0})"`,
    `cd ${shellQuote(options.cwd)}`,
    `exec ${command}`,
    "",
  ].join("\n");
}

/**
 * The Slurm job this process runs in, as `scontrol requeue` takes it: `<array job>_<task>` for
 * an array task, else `SLURM_JOB_ID`; null outside Slurm.
 */
export function currentSlurmJob(
  env: { get(name: string): string | undefined } = Deno.env,
): string | null {
  const array = env.get("SLURM_ARRAY_JOB_ID");
  const task = env.get("SLURM_ARRAY_TASK_ID");
  if (array && task) return `${array}_${task}`;
  return env.get("SLURM_JOB_ID") ?? null;
}

/** `scontrol requeue <job>`: the job goes back to the queue (Slurm ends this process). */
export async function requeueJob(job: string): Promise<void> {
  const { ok, out, err } = await slurmCommand("scontrol", ["requeue", job]);
  if (!ok) throw new Error(`scontrol requeue ${job}: ${(err || out).replaceAll("\n", "; ")}`);
}

/** The `--array` value: the indices, throttled to `jobs` at once when given (`0-3%2`). */
export function arraySpec(indices: readonly number[], jobs?: number): string {
  return compressIndices(indices) + (jobs ? `%${jobs}` : "");
}

async function slurmCommand(
  name: string,
  args: string[],
): Promise<{ ok: boolean; out: string; err: string }> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(name, { args, stdout: "piped", stderr: "piped" }).output();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new UserError(
        `${name} was not found on the PATH: Slurm's client commands are not installed on ` +
          "this machine",
        {
          expected: "a cluster's login node, where `sbatch --version` works, or " +
            "--launcher local to run the points here; nothing was submitted",
        },
      );
    }
    throw err;
  }
  const decode = (b: Uint8Array) => new TextDecoder().decode(b).trim();
  return { ok: output.success, out: decode(output.stdout), err: decode(output.stderr) };
}

/**
 * Throws the {@linkcode UserError} of a machine without Slurm's client commands (no `sbatch` on
 * the PATH), so that a sweep says so before it writes anything.
 */
export async function checkSlurmClient(): Promise<void> {
  await slurmCommand("sbatch", ["--version"]);
}

/** The `sbatch` arguments of one array submission (before the script path). */
export function sbatchArgs(
  options: { indices: readonly number[]; jobs?: number; dependency?: string },
): string[] {
  return [
    "--parsable",
    `--array=${arraySpec(options.indices, options.jobs)}`,
    ...(options.dependency ? [`--dependency=${options.dependency}`] : []),
  ];
}

/** Submits `script` for `indices`; returns the job id. Throws with sbatch's message on refusal. */
export async function submitArray(
  script: string,
  options: { indices: readonly number[]; jobs?: number; dependency?: string },
): Promise<string> {
  const { ok, out, err } = await slurmCommand("sbatch", [...sbatchArgs(options), script]);
  if (!ok) {
    throw new UserError(`sbatch refused ${script}: ${(err || out).replaceAll("\n", "; ")}`, {
      expected: "launcher.slurm resources that the cluster can give (sinfo shows its " +
        "partitions and limits); fix them in the experiment file and run the sweep again",
    });
  }
  const id = out.split("\n").at(-1)!.split(";")[0].trim();
  if (!/^[0-9]+$/.test(id)) throw new Error(`sbatch printed no job id: ${out}`);
  return id;
}

/** Array tasks of `jobIds` still in the queue: index -> state (PENDING, RUNNING, ...). */
export async function queuedTasks(jobIds: readonly string[]): Promise<Map<number, string>> {
  const { ok, out, err } = await slurmCommand("squeue", [
    "--noheader",
    "--array",
    `--jobs=${jobIds.join(",")}`,
    "--format=%i %T",
  ]);
  const tasks = new Map<number, string>();
  if (!ok) {
    // Jobs that have left the queue make some versions fail with "Invalid job id specified".
    if (/invalid job id/i.test(err)) return tasks;
    throw new RunFailure(`squeue failed: ${(err || out).replaceAll("\n", "; ")}`, {
      kept: "the jobs already submitted keep running or waiting in Slurm (sweep.json lists them)",
      todo: [
        "check that Slurm answers (sinfo, squeue), then run the same sweep command with " +
        "--wait to follow them again (complete points are skipped, queued ones left to their jobs)",
      ],
    });
  }
  for (const line of out.split("\n")) {
    const [id, state] = line.trim().split(/\s+/);
    const match = /_(\d+)$/.exec(id ?? "");
    if (match && state) tasks.set(Number(match[1]), state);
    else if (/_\[(.+)\]$/.test(id ?? "") && state) {
      // A pending array not yet split into tasks: `123_[0-3%2]`.
      const ranges = /_\[(.+)\]$/.exec(id)![1].split("%")[0];
      for (const part of ranges.split(",")) {
        const [a, b] = part.split("-").map(Number);
        for (let i = a; i <= (b ?? a); i++) tasks.set(i, state);
      }
    }
  }
  return tasks;
}

/**
 * Final states of array tasks from `sacct` (index -> `COMPLETED`, `FAILED`, ...), or null when
 * the cluster keeps no accounting.
 */
export async function accountedTasks(
  jobIds: readonly string[],
): Promise<Map<number, string> | null> {
  const { ok, out } = await slurmCommand("sacct", [
    "--noheader",
    "--parsable2",
    "--allocations",
    `--jobs=${jobIds.join(",")}`,
    "--format=JobID,State,ExitCode",
  ]).catch(() => ({ ok: false, out: "" }));
  if (!ok) return null;
  const tasks = new Map<number, string>();
  for (const line of out.split("\n")) {
    const [id, state] = line.split("|");
    const match = /_(\d+)$/.exec(id ?? "");
    if (match && state) tasks.set(Number(match[1]), state.split(" ")[0]);
  }
  return tasks;
}

/**
 * Polls `squeue` every `pollMs` until no task of `jobIds` is queued or running, calling
 * `onChange` with the queue whenever it changes; resolves early when `signal` aborts.
 */
export async function waitForJobs(
  jobIds: readonly string[],
  options: {
    pollMs?: number;
    onChange?: (tasks: Map<number, string>) => void | Promise<void>;
    signal?: AbortSignal;
  } = {},
): Promise<void> {
  let last = "";
  while (!options.signal?.aborted) {
    const tasks = await queuedTasks(jobIds);
    const key = JSON.stringify([...tasks]);
    if (key !== last) {
      last = key;
      await options.onChange?.(tasks);
    }
    if (tasks.size === 0) return;
    await new Promise((r) => setTimeout(r, options.pollMs ?? 2000));
  }
}
