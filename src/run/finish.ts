/**
 * The end of a run: `loss.png`, the peak memory and the final status in the manifest (with a
 * Slurm requeue when the time limit's warning stopped it), or, after a failure, the run folder
 * marked failed with the explanation the user will read.
 * @module
 */
import { RunFailure } from "../errors.ts";
import { writeLossPlot } from "../io/plot.ts";
import { explainFailure, type RunProgress, unmarkedFailure } from "./failures.ts";
import type { RunRecord } from "./lifecycle.ts";
import { peakRssMiB } from "./memory.ts";
import type { RequeueRequest, RunResult } from "./types.ts";

/**
 * Writes loss.png and ends the run `complete`, or `interrupted` when `stopped`; under Slurm's
 * warning the requeue is recorded before it is asked for (the job is killed then), and dropped
 * again when it cannot be. Returns what the caller reports.
 */
export async function finishRun(
  run: RunRecord,
  options: {
    /** The step training reached. */
    step: number;
    /** Whether the run was stopped (Ctrl-C, SIGTERM, Slurm's warning). */
    stopped: boolean;
    /** How to requeue the Slurm job, when the run was started with `--requeue`. */
    requeue?: RequeueRequest;
    /** Progress lines. */
    log: (line: string) => void;
  },
): Promise<RunResult> {
  const { step, stopped, log } = options;
  await writeLossPlot(run.dir);
  // ... and to the end of the run (sampling and evaluation included).
  run.manifest.summary.peakRssMiB = peakRssMiB();
  const requeue = stopped && options.requeue?.requested() ? options.requeue : undefined;
  if (requeue) {
    const requeues = run.manifest.requeues ?? [];
    requeues.push({ at: new Date().toISOString(), step, job: requeue.job });
    run.manifest.requeues = requeues;
  }
  await run.end(stopped ? "interrupted" : "complete");
  let requeued: RunResult["requeued"];
  if (requeue) {
    try {
      await requeue.requeue();
      requeued = { job: requeue.job, step };
    } catch (err) {
      run.manifest.requeues!.pop();
      if (run.manifest.requeues!.length === 0) delete run.manifest.requeues;
      await run.save();
      log(`could not requeue Slurm job ${requeue.job}: ${(err as Error).message}`);
    }
  }
  return {
    dir: run.dir,
    status: run.manifest.status,
    manifest: run.manifest,
    ...(requeued ? { requeued } : {}),
  };
}

/**
 * Marks the run folder failed with the explanation of `err` the user will read (./failures.ts)
 * and returns the error to throw: the explanation, or, when the folder could not be marked,
 * one that says so.
 */
export async function failRun(run: RunRecord, err: unknown, at: RunProgress): Promise<unknown> {
  at.checkpointStep = run.checkpointStep;
  const failure = (await explainFailure(err, at)) ?? err;
  try {
    await run.end("failed", failure);
  } catch (endError) {
    if (failure instanceof RunFailure) return unmarkedFailure(failure, endError);
    return err;
  }
  return failure;
}
