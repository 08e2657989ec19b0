/**
 * The Slurm launcher: an `sbatch` array script (one array task per point, each running
 * `run <file> --sweep-index $SLURM_ARRAY_TASK_ID` against the shared outputs folder), its
 * submission, and following the jobs with `squeue` and `sacct`.
 * @module
 */
import type { SlurmConfig } from "../../schemas/experiment.ts";
import { UserError } from "../errors.ts";
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

/** The `sbatch` array script of a sweep: resources from `launcher.slurm`, one task per point. */
export function sbatchScript(slurm: SlurmConfig, options: ScriptOptions): string {
  const directives = [
    `--job-name=${options.name}`,
    `--output=${options.logDir}/point-%a.log`,
    "--open-mode=append",
    ...(slurm.partition ? [`--partition=${slurm.partition}`] : []),
    ...(slurm.gpus !== undefined ? [`--gpus=${slurm.gpus}`] : []),
    ...(slurm.cpus !== undefined ? [`--cpus-per-task=${slurm.cpus}`] : []),
    ...(slurm.memory ? [`--mem=${slurm.memory}`] : []),
    ...(slurm.time ? [`--time=${slurm.time}`] : []),
    ...slurm.extra,
  ];
  const command = pointCommand(options.file, {
    index: "@INDEX@",
    outRoot: options.outRoot,
    sets: options.sets,
  }).map(shellQuote).join(" ").replace("@INDEX@", '"$SLURM_ARRAY_TASK_ID"');
  return [
    "#!/bin/bash",
    `# ddpm-lab sweep ${options.name}: one array task per point (deno task sweep ${options.file})`,
    ...directives.map((d) => `#SBATCH ${d}`),
    "",
    "set -euo pipefail",
    ...slurm.setup,
    `echo "== point $SLURM_ARRAY_TASK_ID of job $SLURM_ARRAY_JOB_ID on $(hostname) at $(date -Is)"`,
    `cd ${shellQuote(options.cwd)}`,
    `exec ${command}`,
    "",
  ].join("\n");
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
      throw new UserError(`${name} not found: Slurm's client commands are not installed here`, {
        expected: "a machine that can submit Slurm jobs (sbatch, squeue on the PATH)",
      });
    }
    throw err;
  }
  const decode = (b: Uint8Array) => new TextDecoder().decode(b).trim();
  return { ok: output.success, out: decode(output.stdout), err: decode(output.stderr) };
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
      expected: "launcher.slurm resources that the cluster can give (sinfo shows them)",
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
    throw new Error(`squeue failed: ${err || out}`);
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
