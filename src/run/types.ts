/**
 * What a run takes and gives: the options of {@linkcode runExperiment} (./runner.ts), its
 * result, and the progress a display is told. The evaluation hook's contract,
 * {@linkcode EvaluationPoint}, is the evaluator's (src/eval/run_evaluator.ts).
 * @module
 */
import type { ConditionalScorer } from "../eval/conditional.ts";
import type { EvaluationHook } from "../eval/run_evaluator.ts";
import type { StepRecord } from "../train/mod.ts";
import type { Manifest } from "./manifest.ts";

export type { EvaluationHook, EvaluationPoint } from "../eval/run_evaluator.ts";
export type { ConditionalSamples, ConditionalScorer } from "../eval/conditional.ts";

/** Options of {@linkcode runExperiment}. */
export interface RunOptions {
  /** Root of run folders (default `outputs`). */
  outRoot: string;
  /** Replace a complete run of the same config. */
  force?: boolean;
  /** Continue the interrupted run of this config from its last checkpoint. */
  resume?: boolean;
  /** Train even when a complete run with the same training part could be reused. */
  retrain?: boolean;
  /** Aborting it (Ctrl-C) stops after the current step, checkpoints, and marks the run interrupted. */
  signal?: AbortSignal;
  /** Where progress lines go (default console.log). */
  log?: (line: string) => void;
  /** Called after every training step (tests, interruption). */
  onStep?: (record: StepRecord) => void;
  /** Told how far each phase is (progress bars); the printed log lines do not depend on it. */
  progress?: ProgressReporter;
  /**
   * Evaluates the model (KID/FID, ...) after each epoch's checkpoint and once at the end, after
   * sampling, instead of the `eval` section's evaluator. Numbers returned after an epoch go to
   * `evaluations.jsonl` with the step and epoch; those returned at the end go to the manifest
   * summary.
   */
  evaluate?: EvaluationHook;
  /** Folder of the avatar cache (default `<project>/.cache/avatars`). */
  cacheDir?: string;
  /** The ddpm-lab checkout, for the git state in the manifest. */
  projectDir?: string;
  /**
   * Conditional runs: scores the samples of each guidance weight (the attribute judge's
   * accuracy per attribute, KID...); the numbers go to `guidance.md` and `guidance.json`.
   */
  scoreConditional?: ConditionalScorer;
  /**
   * Under Slurm: when `signal` aborted for the warning before the time limit, the run (after
   * its checkpoint, marked interrupted) records the requeue in its manifest and requeues the job.
   */
  requeue?: RequeueRequest;
}

/** {@linkcode RunOptions} with its progress lines' sink given (the phases' view of them). */
export type RunContext = RunOptions & { log: (line: string) => void };

/** How a run requeues its Slurm job (see {@linkcode RunOptions.requeue}). */
export interface RequeueRequest {
  /** The job `requeue` requeues (recorded in the manifest). */
  job: string;
  /** Whether the stop was the warning (rather than Ctrl-C or SIGTERM). */
  requested(): boolean;
  /** Requeues the job; throws with the reason when it cannot. */
  requeue(): Promise<void>;
}

/** What a run produced. */
export interface RunResult {
  /** The run folder. */
  dir: string;
  /** Final status. */
  status: Manifest["status"];
  /** The manifest written. */
  manifest: Manifest;
  /** The Slurm job this interrupted run requeued, and the step it resumes from. */
  requeued?: { job: string; step: number };
}

/** The long phases of a run. */
export type ProgressPhase = "data" | "train" | "sample" | "evaluate";

/** What a training progress bar shows besides the count. */
export interface ProgressDetail {
  /** Epoch of the last step, 1-based. */
  epoch?: number;
  /** Epochs of the run. */
  epochs?: number;
  /** The training loss averaged over the last `LOSS_WINDOW` steps (./logs.ts). */
  loss?: number | null;
}

/** Where a run is, for a progress bar: `done` of `total` steps of a phase. */
export interface ProgressReporter {
  /**
   * Called as the images are rendered or decoded (`data`, images), after each training step
   * (`train`, steps, with the epoch and the loss), after each sampling step (`sample`, the steps
   * of all batches) and as an evaluation hook reports (`evaluate`).
   */
  update(phase: ProgressPhase, done: number, total: number, detail?: ProgressDetail): void;
}
