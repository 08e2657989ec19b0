/**
 * `sweep.json`, the index of a sweep: every point's overrides, seed, run folder and status, and
 * the Slurm jobs that run them. It lives in `<out>/<name>/` next to the points' run folders, and
 * paths in it are relative to that folder so that the outputs can move. A point's status is read
 * from its run folder (manifest and lock), which stays the single source of truth: array tasks
 * never write this file, whoever looks refreshes it.
 * @module
 */
import { dirname, join, relative, resolve } from "node:path";
import { configHash } from "../config/mod.ts";
import { writeFileAtomic } from "../io/files.ts";
import { runFolder } from "../run/folder.ts";
import { runLockHolder } from "../run/lock.ts";
import { readManifest, type RunStatus } from "../run/manifest.ts";
import { trainingHash } from "../run/training_cache.ts";
import type { Sweep } from "./spec.ts";

/**
 * Where a point stands: a run status, `pending` (not started), `queued` (submitted to Slurm, not
 * started) or `killed` (its manifest says running but no process holds its folder).
 */
export type PointStatus = RunStatus | "pending" | "queued" | "killed";

/** One point in `sweep.json`. */
export interface IndexPoint {
  /** Its index (`--sweep-index`, `SLURM_ARRAY_TASK_ID`). */
  index: number;
  /** Path -> value. */
  overrides: Record<string, unknown>;
  /** Its seed. */
  seed: number;
  /** Its run folder, relative to the folder of sweep.json. */
  run: string;
  /** sha256 of its resolved config. */
  configHash: string;
  /** sha256 of its training part (points that share it train once). */
  trainingHash: string;
  /** Where it stands. */
  status: PointStatus;
  /** Its log (stdout and stderr of its process), relative to the folder of sweep.json. */
  log: string;
  /** The error of a failed run, from its manifest. */
  error?: string;
  /** How often Slurm requeued it near its time limit (its manifest's `requeues`), when it was. */
  requeues?: number;
}

/** One `sbatch` submission. */
export interface SlurmJob {
  /** The job id sbatch printed. */
  id: string;
  /** The point indices of its array. */
  indices: number[];
  /** `afterany:<id>` when it waits for the job that trains the points it reuses. */
  dependency?: string;
}

/** The content of `sweep.json`. */
export interface SweepIndex {
  /** Format version. */
  format: 1;
  /** Experiment name. */
  name: string;
  /** The experiment file (absolute). */
  file: string;
  /** `grid` or `zip`. */
  mode: "grid" | "zip";
  /** The swept paths and their values. */
  axes: Record<string, unknown[]>;
  /** The seeds of every point. */
  seeds: number[];
  /** `--set` overrides given to the sweep command. */
  sets: string[];
  /** How the points were started last. */
  launcher: "local" | "slurm";
  /** ISO times. */
  createdAt: string;
  /** ISO time of the last refresh. */
  updatedAt: string;
  /** The sbatch script and jobs (Slurm launcher). */
  slurm?: { script: string; jobs: SlurmJob[] };
  /** Every point. */
  points: IndexPoint[];
}

/** The folder of a sweep's index: `<out>/<name>`. */
export function sweepFolder(outRoot: string, name: string): string {
  return join(outRoot, name);
}

/** Builds the index of `sweep` under `outRoot` (statuses `pending` until refreshed). */
export function buildIndex(
  sweep: Sweep,
  options: { outRoot: string; launcher: "local" | "slurm" },
): SweepIndex {
  const folder = sweepFolder(options.outRoot, sweep.name);
  const now = new Date().toISOString();
  const { mode, seeds: _seeds, ...axes } = sweep.spec;
  return {
    format: 1,
    name: sweep.name,
    file: sweep.file,
    mode,
    axes: axes as Record<string, unknown[]>,
    seeds: [...new Set(sweep.points.map((p) => p.seed))],
    sets: sweep.sets,
    launcher: options.launcher,
    createdAt: now,
    updatedAt: now,
    points: sweep.points.map((p) => {
      const hash = configHash(p.loaded.config);
      const dir = runFolder(options.outRoot, { name: sweep.name, seed: p.seed, hash });
      return {
        index: p.index,
        overrides: p.overrides,
        seed: p.seed,
        run: relative(folder, dir),
        configHash: hash,
        trainingHash: trainingHash(p.loaded.config),
        status: "pending",
        log: join("logs", `point-${p.index}.log`),
      };
    }),
  };
}

/** The absolute path of a path recorded in the index stored at `indexPath`. */
export function indexedPath(indexPath: string, rel: string): string {
  return resolve(dirname(indexPath), rel);
}

/** The status of a run folder: its manifest's, `killed` when it says running but nobody holds it. */
export async function runStatus(dir: string): Promise<PointStatus | null> {
  const manifest = await readManifest(dir);
  if (manifest === null) return (await runLockHolder(dir)) ? "running" : null;
  if (manifest.status === "running" && (await runLockHolder(dir)) === null) return "killed";
  return manifest.status;
}

/**
 * Reads every point's status from its run folder (`queued` stays queued until the run starts)
 * and the error of failed runs.
 */
export async function refreshIndex(index: SweepIndex, indexPath: string): Promise<SweepIndex> {
  for (const point of index.points) {
    const dir = indexedPath(indexPath, point.run);
    const status = await runStatus(dir);
    if (status !== null) {
      point.status = status;
      const manifest = await readManifest(dir);
      if (status === "failed" && manifest?.error) point.error = manifest.error;
      else delete point.error;
      const requeues = manifest?.requeues?.length ?? 0;
      if (requeues > 0) point.requeues = requeues;
      else delete point.requeues;
    } else if (point.status !== "queued" && point.status !== "failed") point.status = "pending";
  }
  index.updatedAt = new Date().toISOString();
  return index;
}

/** Writes the index atomically (creating its folder). */
export async function writeIndex(index: SweepIndex, indexPath: string): Promise<void> {
  await Deno.mkdir(dirname(indexPath), { recursive: true });
  await writeFileAtomic(indexPath, JSON.stringify(index, null, 2) + "\n");
}

/** Reads `sweep.json` (the file, or the folder holding it); null when there is none. */
export async function readIndex(path: string): Promise<{ index: SweepIndex; path: string } | null> {
  for (const candidate of [path, join(path, "sweep.json")]) {
    try {
      const text = await Deno.readTextFile(candidate);
      const index = JSON.parse(text) as SweepIndex;
      if (index.format === 1 && Array.isArray(index.points)) return { index, path: candidate };
    } catch {
      // not this one
    }
  }
  return null;
}
