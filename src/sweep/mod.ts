/**
 * Sweeps: the points an experiment's `sweep` declares, run as ordinary seed-tagged run folders on
 * this machine (child processes) or as a Slurm array job, with `sweep.json` indexing them.
 * @module
 */
import { dirname, join, relative, resolve } from "node:path";
import { UserError } from "../errors.ts";
import { plural } from "../config/summary.ts";
import { runLocal } from "./local.ts";
import { type LaunchItem, type LaunchPlan, planLaunch } from "./plan.ts";
import { describePoint } from "./points.ts";
import {
  accountedTasks,
  checkSlurmClient,
  queuedTasks,
  sbatchArgs,
  sbatchScript,
  submitArray,
  waitForJobs,
} from "./slurm.ts";
import { writeSweepFigure } from "./figure.ts";
import { loadSweep, type Sweep } from "./spec.ts";
import {
  buildIndex,
  indexedPath,
  type IndexPoint,
  readIndex,
  refreshIndex,
  type SlurmJob,
  sweepFolder,
  type SweepIndex,
  writeIndex,
} from "./sweep_index.ts";

export { loadSweep, loadSweepPoint, type Sweep } from "./spec.ts";
export { expandSweep, type SweepPoint } from "./points.ts";
export { type IndexPoint, readIndex, type SweepIndex } from "./sweep_index.ts";

/** Options of {@link runSweep}. */
export interface SweepOptions {
  /** `local`: child processes here; `slurm`: an sbatch array job. */
  launcher: "local" | "slurm";
  /** At most this many points at once (local default 1; Slurm: the array's `%N`, default none). */
  jobs?: number;
  /** Outputs root (default `outputs`). */
  outRoot?: string;
  /** `--set` overrides applied to every point. */
  sets?: string[];
  /** List the points (and the sbatch script) without running or writing anything. */
  dryRun?: boolean;
  /** With `dryRun`: measure each point's time on this machine (default true). */
  estimate?: boolean;
  /** Slurm: follow the jobs until they end. (The local launcher always waits.) */
  wait?: boolean;
  /** Slurm: seconds between `squeue` polls (default 2). */
  pollSeconds?: number;
  /** Stops starting points; local points running get SIGTERM and checkpoint. */
  signal?: AbortSignal;
  /** Where progress lines go (default console.log). */
  log?: (line: string) => void;
  /** Local launcher: also pass the points' output through to this process. */
  echo?: boolean;
}

/** What a sweep did. */
export interface SweepResult {
  /** Path of sweep.json (where it would go, for a dry run). */
  indexPath: string;
  /** The index as last written (statuses refreshed). */
  index: SweepIndex;
  /** Points started by this command that did not complete (after waiting). */
  failed: IndexPoint[];
  /** Slurm submissions of this command. */
  jobs: SlurmJob[];
}

/** The points as an aligned table: index, overrides and seed, status, run folder. */
export function formatPoints(index: SweepIndex, indexPath: string, plan?: LaunchPlan): string {
  const rows = [["point", "overrides", "status", "run folder"]];
  for (const point of index.points) {
    const item = plan?.items.find((i) => i.index === point.index);
    let note: string = point.status;
    if (plan && point.status === "complete") note = "complete (skipped)";
    else if (plan && (point.status === "running" || point.status === "queued")) {
      note = `${point.status} (left to its process or job)`;
    } else if (item?.after !== null && item?.after !== undefined) {
      note += `, reuses the training of point ${item.after}`;
    }
    rows.push([
      String(point.index),
      describePoint(point),
      note,
      shown(indexedPath(indexPath, point.run)),
    ]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd()).join("\n");
}

/**
 * The dry run's estimated time of each point to run, measured on this machine as `run --dry-run`
 * does (a few real steps of each point's model); a point that reuses another's training costs
 * its sampling only. Loads TensorFlow.js, so only here.
 */
async function estimatePoints(sweep: Sweep, plan: LaunchPlan): Promise<string> {
  if (plan.items.length === 0) return "estimated time: nothing to run";
  const { estimateRun } = await import("../run/estimate.ts");
  const { formatDuration } = await import("../run/logs.ts");
  const lines = ["estimated time on this machine (training + sampling; decoding not counted):"];
  let total = 0;
  for (const item of plan.items) {
    const point = sweep.points.find((p) => p.index === item.index)!;
    const e = await estimateRun(point.loaded);
    // A point that reuses a training samples and evaluates at the end only.
    const sampling = e.sampleSteps * e.secondsPerSampleStep + (e.evaluation?.finalSeconds ?? 0);
    const seconds = item.after === null ? e.totalSeconds : sampling;
    total += seconds;
    lines.push(
      `  point ${item.index}: ${formatDuration(seconds)}` +
        (item.after === null
          ? ` (${e.steps} steps × ${e.secondsPerStep.toFixed(3)} s + sampling ` +
            `${formatDuration(sampling)})`
          : ` (sampling only: reuses the training of point ${item.after})`) +
        (e.skipped ? `; ${e.skipped}` : ""),
    );
  }
  lines.push(`  all points one after another: ${formatDuration(total)}`);
  return lines.join("\n");
}

/** The last `error: ...` line of a log (what the CLI printed before exiting), if any. */
async function lastError(path: string): Promise<string | undefined> {
  const text = await Deno.readTextFile(path).catch(() => "");
  return text.split("\n").findLast((line) => line.startsWith("error: "))?.slice(7);
}

/** `path` relative to the current folder when inside it, else as given. */
function shown(path: string): string {
  const rel = relative(Deno.cwd(), path);
  return rel.startsWith("..") || rel === "" ? path : rel;
}

/** What Slurm's final state of a task (sacct) means, and what to do about it. */
const SLURM_STATES: Record<string, string> = {
  TIMEOUT: "it reached its time limit: raise launcher.slurm.time, or keep launcher.slurm.signal " +
    "above 0 so that it checkpoints and requeues itself before the limit",
  OUT_OF_MEMORY: "it ran out of memory: raise launcher.slurm.memory, or lower train.microBatch",
  CANCELLED: "it was cancelled (scancel, or preempted without a requeue)",
  PREEMPTED: "it was preempted",
  NODE_FAIL: "its node failed",
  BOOT_FAIL: "its node did not boot",
  DEADLINE: "it reached its deadline",
};

/**
 * What to do about a point that did not complete: from Slurm's state when the cluster keeps
 * accounting, else from the run's status. Every case ends with running the sweep again, which
 * skips complete points and resumes the others from their checkpoints.
 */
export function failureAdvice(point: IndexPoint): string {
  const state = /slurm: ([A-Z_]+)/.exec(point.error ?? "")?.[1];
  const again = "run the same sweep command again: complete points are skipped, the others " +
    "resume from their checkpoints (or start over when they have none)";
  if (state && SLURM_STATES[state]) return `${SLURM_STATES[state]}; then ${again}`;
  switch (point.status) {
    case "interrupted":
      return `it stopped before the end (a signal: Ctrl-C, scancel, its time limit); ${again}`;
    case "killed":
      return "its process died without marking the run (killed: out of memory? SIGKILL at its " +
        `time limit?); see the end of its log, then ${again}`;
    case "failed":
      return `its run failed with the error above (its log has the whole output); fix the cause, then ${again}`;
    default:
      return `it never started a run (see its log); ${again}`;
  }
}

/** Failed points with the path of their log and what to do, a few lines each. */
export function formatFailures(failed: IndexPoint[], indexPath: string): string {
  return failed.map((p) =>
    `point ${p.index} (${describePoint(p)}): ${p.status}` +
    `${p.error ? `: ${p.error.replaceAll("\n", "\n  ")}` : ""}\n` +
    `  log: ${indexedPath(indexPath, p.log)}\n` +
    `  what to do: ${failureAdvice(p)}`
  ).join("\n");
}

/**
 * Runs the sweep of experiment file `path`: resolves every point (bad input throws a
 * {@linkcode UserError} before anything is written), skips complete points, writes
 * `<out>/<name>/sweep.json`, then starts the rest locally or on Slurm.
 */
export async function runSweep(path: string, options: SweepOptions): Promise<SweepResult> {
  const log = options.log ?? ((line: string) => console.log(line));
  const outRoot = resolve(options.outRoot ?? "outputs");
  if (options.jobs !== undefined && (!Number.isInteger(options.jobs) || options.jobs < 1)) {
    throw new UserError(`--jobs ${options.jobs}: not a positive integer`, {
      expected: "--jobs N with N >= 1",
    });
  }
  const sweep = await loadSweep(path, { sets: options.sets ?? [] });
  const indexPath = join(sweepFolder(outRoot, sweep.name), "sweep.json");
  const previous = await readIndex(indexPath);
  const index = buildIndex(sweep, { outRoot, launcher: options.launcher });
  if (previous) {
    index.createdAt = previous.index.createdAt;
    if (previous.index.slurm) index.slurm = previous.index.slurm;
  }
  await refreshIndex(index, indexPath);
  if (previous?.index.slurm) await keepQueued(index, previous.index.slurm.jobs);
  const plan = await planLaunch(index, outRoot);
  const logDir = join(sweepFolder(outRoot, sweep.name), "logs");
  const scriptPath = join(sweepFolder(outRoot, sweep.name), "slurm", "sweep.sbatch");
  const script = sbatchScript(sweep.slurm, {
    name: sweep.name,
    file: sweep.file,
    outRoot,
    sets: sweep.sets,
    logDir,
    cwd: Deno.cwd(),
  });
  const submissions = slurmSubmissions(plan.items);
  log(
    `sweep ${sweep.name}: ${index.points.length} points (${plan.complete.length} complete, ` +
      `${plan.busy.length} running elsewhere or queued, ` +
      `${plan.items.length} to run)`,
  );
  if (options.dryRun) {
    log(formatPoints(index, indexPath, plan));
    if (options.estimate ?? true) log(await estimatePoints(sweep, plan));
    if (options.launcher === "slurm" && plan.items.length > 0) {
      log(`\n${scriptPath} would be:\n${script}`);
      for (const s of submissions) {
        const dependency = s.afterFirst ? "afterany:<id of the first job>" : undefined;
        log(
          `sbatch ${sbatchArgs({ ...s, jobs: options.jobs, dependency }).join(" ")} ${scriptPath}`,
        );
      }
    }
    return { indexPath, index, failed: [], jobs: [] };
  }
  if (options.launcher === "slurm" && plan.items.length > 0) await checkSlurmClient();
  await writeIndex(index, indexPath);
  const context: LaunchContext = { sweep, index, indexPath, plan, outRoot, options, log };
  const jobs = options.launcher === "local"
    ? (await launchLocal(context), [])
    : await launchSlurm(context, { script, scriptPath, logDir, submissions });
  await refreshIndex(index, indexPath);
  await writeIndex(index, indexPath);
  const figure = await writeSweepFigure(index, indexPath);
  if (figure) log(`samples of every complete point, named: ${shown(figure)}`);
  const started = new Set(plan.items.map((i) => i.index));
  const waited = options.launcher === "local" || options.wait;
  const failed = waited
    ? index.points.filter((p) => started.has(p.index) && p.status !== "complete")
    : [];
  return { indexPath, index, failed, jobs };
}

/** What the launchers share. */
interface LaunchContext {
  sweep: Sweep;
  index: SweepIndex;
  indexPath: string;
  plan: LaunchPlan;
  outRoot: string;
  options: SweepOptions;
  log: (line: string) => void;
}

/** Marks a point that ended without a run folder as failed, with the error its log ends with. */
async function markEndedEarly(point: IndexPoint, ctx: LaunchContext, why: string): Promise<void> {
  if (point.status !== "pending" && point.status !== "queued") return;
  point.status = "failed";
  point.error = await lastError(indexedPath(ctx.indexPath, point.log)) ?? why;
}

/** Runs the plan's points as child processes here, refreshing sweep.json as they start and end. */
async function launchLocal(ctx: LaunchContext): Promise<void> {
  const { index, indexPath, plan, options, log } = ctx;
  let done = 0;
  await runLocal(plan.items, {
    file: ctx.sweep.file,
    outRoot: ctx.outRoot,
    sets: ctx.sweep.sets,
    jobs: options.jobs ?? 1,
    logOf: (i) => indexedPath(indexPath, index.points[i].log),
    signal: options.signal,
    echo: options.echo,
    onEvent: async ({ index: i, code, seconds }) => {
      await refreshIndex(index, indexPath);
      const point = index.points[i];
      if (code === undefined) {
        log(
          `point ${i} (${describePoint(point)}): started, log ${
            shown(indexedPath(indexPath, point.log))
          }`,
        );
      } else {
        done++;
        if (code !== 0) {
          await markEndedEarly(point, ctx, `exit code ${code} before its run started`);
        }
        log(
          `[${done}/${plan.items.length}] point ${i} (${describePoint(point)}): ${point.status}` +
            ` in ${seconds!.toFixed(1)} s (exit ${code})`,
        );
      }
      await writeIndex(index, indexPath);
    },
  });
}

/**
 * Writes the sbatch script, submits the plan's points (those that reuse another's training in a
 * second array that depends on the first), records the jobs in sweep.json and, with `wait`,
 * follows them until they end. Returns the jobs.
 */
async function launchSlurm(
  ctx: LaunchContext,
  slurm: {
    script: string;
    scriptPath: string;
    logDir: string;
    submissions: { indices: number[]; afterFirst: boolean }[];
  },
): Promise<SlurmJob[]> {
  const { index, indexPath, options, log } = ctx;
  await Deno.mkdir(dirname(slurm.scriptPath), { recursive: true });
  await Deno.mkdir(slurm.logDir, { recursive: true });
  await Deno.writeTextFile(slurm.scriptPath, slurm.script);
  const jobs: SlurmJob[] = [];
  for (const s of slurm.submissions) {
    const dependency = s.afterFirst ? `afterany:${jobs[0].id}` : undefined;
    const id = await submitArray(slurm.scriptPath, { ...s, jobs: options.jobs, dependency });
    jobs.push({ id, indices: s.indices, ...(dependency ? { dependency } : {}) });
    s.indices.forEach((i) => index.points[i].status = "queued");
    log(
      `submitted job ${id}: points ${s.indices.join(", ")}${dependency ? ` (${dependency})` : ""}`,
    );
  }
  index.slurm = { script: relative(dirname(indexPath), slurm.scriptPath), jobs };
  await writeIndex(index, indexPath);
  if (!options.wait || jobs.length === 0) return jobs;

  const ids = jobs.map((j) => j.id);
  const started = ctx.plan.items.map((i) => i.index);
  const poll = options.pollSeconds ?? 2;
  log(`waiting for job ${ids.join(", ")} (squeue every ${poll} s)`);
  let before = new Map<number, string>();
  await waitForJobs(ids, {
    pollMs: poll * 1000,
    signal: options.signal,
    onChange: async (tasks) => {
      const counts = new Map<string, number>();
      for (const state of tasks.values()) counts.set(state, (counts.get(state) ?? 0) + 1);
      await refreshIndex(index, indexPath);
      await writeIndex(index, indexPath);
      // A task that ran and is pending again was requeued (near its time limit, or preempted).
      for (const [i, state] of tasks) {
        const was = before.get(i);
        if (state === "PENDING" && (was === "RUNNING" || was === "COMPLETING")) {
          const point = index.points[i];
          log(
            `  point ${i} (${describePoint(point)}) was requeued (${point.status}): it resumes ` +
              "from its checkpoint when Slurm starts it again",
          );
        }
      }
      before = tasks;
      const ended = started.filter((i) => !tasks.has(i)).length;
      log(
        `  ${ended}/${started.length} points ended` +
          [...counts].map(([s, n]) => `, ${n} ${s.toLowerCase()}`).join(""),
      );
    },
  });
  await refreshIndex(index, indexPath);
  for (const i of started) {
    const point = index.points[i];
    if (!point.requeues) continue;
    log(
      `point ${i} (${describePoint(point)}): requeued ${plural(point.requeues, "time")} near ` +
        `its time limit, resumed each time; ${point.status}`,
    );
  }
  const states = await accountedTasks(ids);
  for (const i of started) {
    const point = index.points[i];
    await markEndedEarly(point, ctx, "the task ended before its run started");
    const state = states?.get(i);
    if (point.status !== "complete" && state !== undefined) {
      point.error = `${point.error ? `${point.error}; ` : ""}slurm: ${state}`;
    }
  }
  return jobs;
}

/** Points of earlier Slurm jobs that are still queued or running are left to those jobs. */
async function keepQueued(index: SweepIndex, jobs: readonly SlurmJob[]): Promise<void> {
  const queued = await queuedTasks(jobs.map((j) => j.id)).catch(() => null);
  for (const [i, state] of queued ?? []) {
    const point = index.points[i];
    if (point && (point.status === "pending" || point.status === "failed")) {
      point.status = state === "RUNNING" ? "running" : "queued";
    }
  }
}

/**
 * The sbatch submissions of a launch: the points that train (or need no one), then, depending
 * on that first job, the points that reuse their training.
 */
function slurmSubmissions(
  items: readonly LaunchItem[],
): { indices: number[]; afterFirst: boolean }[] {
  const first = items.filter((i) => i.after === null).map((i) => i.index);
  const then = items.filter((i) => i.after !== null).map((i) => i.index);
  const out: { indices: number[]; afterFirst: boolean }[] = [];
  if (first.length > 0) out.push({ indices: first, afterFirst: false });
  if (then.length > 0) out.push({ indices: then, afterFirst: first.length > 0 });
  return out;
}
