/**
 * A run's evaluations: the caller's hook (`RunOptions.evaluate`) or the `eval`
 * section's evaluator (KID, FID, judge: eval.jsonl), bound to the run's folder, dataset and
 * progress display: after each epoch's checkpoint on the tfjs network (./train_phase.ts calls
 * it), and once at the end on the sampling engine, into the manifest summary.
 * @module
 */
import type { Denoiser } from "../diffusion/ddpm.ts";
import { type EvaluationHook, RunEvaluator } from "../eval/mod.ts";
import type { RunRecord } from "./lifecycle.ts";
import type { RunSession } from "./session.ts";
import { phaseProgress } from "./progress.ts";
import type { RunContext } from "./types.ts";

/** Where training is, as the evaluation after an epoch (and at the end) is told. */
export interface TrainedPoint {
  /** Optimizer steps done. */
  step: number;
  /** Epoch of the last step (0-based). */
  epoch: number;
  /** Whether this is the evaluation at the end of the run. */
  final: boolean;
}

/** The evaluations of one run (see the module documentation); `using` frees the evaluator. */
export class RunEvaluations implements Disposable {
  #hook: EvaluationHook | undefined;
  #evaluator: RunEvaluator | null;
  #session: RunSession;
  #ctx: { dir: string; progress: () => (done: number, total: number) => void };
  /** The evaluation after an epoch, on the tfjs network (undefined: there is none). */
  readonly afterEpoch: ((point: TrainedPoint) => ReturnType<EvaluationHook>) | undefined;

  private constructor(
    session: RunSession,
    parts: {
      hook: EvaluationHook | undefined;
      evaluator: RunEvaluator | null;
      dir: string;
      progress: () => (done: number, total: number) => void;
    },
  ) {
    this.#session = session;
    this.#hook = parts.hook;
    this.#evaluator = parts.evaluator;
    this.#ctx = { dir: parts.dir, progress: parts.progress };
    const denoise = session.denoiser();
    this.afterEpoch = parts.hook ? (point) => this.#evaluate(point, denoise) : undefined;
  }

  /**
   * The caller's hook, or the `eval` section's evaluator started (its feature network loaded,
   * its judge trained or loaded); neither without an `eval` section.
   */
  static async start(
    session: RunSession,
    ctx: {
      /** The run folder. */
      dir: string;
      /** The experiment file (a relative `eval.features` is relative to it). */
      experimentFile: string;
      /** The run's options: its hook, log, stop signal, progress display. */
      options: RunContext;
    },
  ): Promise<RunEvaluations> {
    const { options } = ctx;
    const evaluator = options.evaluate ? null : await RunEvaluator.start(session.config, {
      experimentFile: ctx.experimentFile,
      dataset: session.dataset!,
      backend: session.backend.name,
      log: options.log,
      signal: options.signal,
    });
    return new RunEvaluations(session, {
      hook: options.evaluate ?? evaluator?.hook,
      evaluator,
      dir: ctx.dir,
      progress: () => phaseProgress("evaluate", options),
    });
  }

  /** The evaluation at the end, on the sampling engine: its numbers go to the manifest summary. */
  async final(run: RunRecord, trained: { step: number; epoch: number }): Promise<void> {
    if (!this.#hook) return;
    const denoise = this.#session.sampling?.denoise ?? this.#session.denoiser();
    Object.assign(run.manifest.summary, await this.#evaluate({ ...trained, final: true }, denoise));
  }

  #evaluate(point: TrainedPoint, denoise: Denoiser): ReturnType<EvaluationHook> {
    const session = this.#session;
    return this.#hook!({
      config: session.config,
      dir: this.#ctx.dir,
      ...point,
      denoise,
      dataset: session.dataset!,
      onProgress: this.#ctx.progress(),
    });
  }

  /** Frees the evaluator's feature network and judge. */
  [Symbol.dispose](): void {
    this.#evaluator?.dispose();
  }
}
