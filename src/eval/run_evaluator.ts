/**
 * A run's evaluations (the `eval` section): the hook the runner calls after each epoch's
 * checkpoint and once at the end ({@link EvaluationPoint}, its contract, declared here and
 * imported by src/run), the evaluator behind it ({@link RunEvaluator}: sample `eval.samples`
 * images, KID/FID/judge against the training set, eval.jsonl), and the summary and one-line
 * forms of its numbers.
 * @module
 */
import { dirname, join, resolve } from "node:path";
import type { EvalConfig, Experiment } from "../../schemas/experiment.ts";
import type { Dataset } from "../data/mod.ts";
import { samplingSteps } from "../diffusion/generate.ts";
import type { Denoiser } from "../diffusion/ddpm.ts";
import { makeSchedule, type Schedule } from "../diffusion/schedule.ts";
import { plannedSteps } from "../train/mod.ts";
import { UserError } from "../errors.ts";
import { writeFileAtomic } from "../io/files.ts";
import { deriveRng } from "../rng.ts";
import { type EvalResult, evaluateSamples, type FeatureMetric } from "./samples_vs_reference.ts";
import { type FeatureNetwork, loadFeatureNetwork } from "./features.ts";
import { sampleImageSet } from "./images.ts";
import { attributeDistance, type Judge, labelledFromDataset, trainJudge } from "./judge.ts";

/** What a run's evaluator needs besides the config. */
export interface RunEvalContext {
  /** The experiment file: a relative `eval.features` path is relative to it. */
  experimentFile: string;
  /** The loaded training set (the reference set is drawn from it). */
  dataset: Dataset;
  /** The tfjs backend (recorded). */
  backend: string;
  /** Progress lines. */
  log: (line: string) => void;
  /** Stops sampling when aborted. */
  signal?: AbortSignal;
  /** Cache root (default `<project>/.cache`). */
  cacheDir?: string;
}

/**
 * What an evaluation hook sees (the runner's `evaluate` option, {@link RunEvaluator.hook}): the
 * network as the samplers see it, and where training is. Called after each epoch's checkpoint
 * (`final: false`) and once at the end, after sampling (`final: true`).
 */
export interface EvaluationPoint {
  /** The resolved experiment. */
  config: Experiment;
  /** The run folder: eval.jsonl and eval_timings.jsonl go there. */
  dir: string;
  /** Optimizer steps done. */
  step: number;
  /** Epoch of the last step (0-based). */
  epoch: number;
  /** Whether this is the evaluation at the end of the run. */
  final: boolean;
  /** The network (the EMA weights when the experiment keeps them), as the samplers see it. */
  denoise: Denoiser;
  /** The training images. */
  dataset: Dataset;
  /** For long evaluations: report `done` of `total` (images, say) to the progress display. */
  onProgress?: (done: number, total: number) => void;
}

/**
 * An evaluation hook: numbers returned after an epoch go to `evaluations.jsonl` with the step
 * and epoch; those returned at the end go to the manifest summary.
 */
export type EvaluationHook = (point: EvaluationPoint) => Promise<Record<string, number> | void>;

/** One evaluation of a run: a line of eval.jsonl and, at the end, eval.json. */
export interface RunEvaluation extends EvalResult {
  /** The epoch after which it ran (1-based), or the last epoch for the final one. */
  epoch: number;
  /** The step after which it ran. */
  step: number;
  /** The judge's scores, when `eval.metrics` has `judge`. */
  judge?: {
    /** Mean over attributes of the total variation distance. */
    tv: number;
    /** Per attribute. */
    perAttribute: Record<string, number>;
    /** The judge's held-out accuracy on real images, per attribute. */
    accuracy: Record<string, number>;
  };
}

/** The protocol fields of the sampler that made the samples. */
export function samplerProtocol(config: Experiment, schedule: Schedule): Record<string, unknown> {
  return {
    sampler: config.sampler,
    steps: samplingSteps(config.sampler, schedule.timesteps),
    ema: config.optimizer.ema !== undefined,
    experimentSeed: config.seed,
  };
}

/**
 * Checks what the `eval` section needs before a run folder exists: a readable `eval.features`
 * file and, for `judge`, a labelled dataset. Throws a {@link UserError} naming the file and field.
 */
export async function checkEvalInput(
  config: Experiment,
  options: { dataset: Dataset; experimentFile: string },
): Promise<void> {
  const settings = config.eval;
  if (!settings) return;
  const where = { file: options.experimentFile };
  if (settings.features !== undefined) {
    const path = resolve(dirname(options.experimentFile), settings.features);
    try {
      if (!(await Deno.stat(path)).isFile) throw new Error("not a file");
    } catch {
      throw new UserError(`feature model ${path} cannot be read`, {
        ...where,
        path: "eval.features",
        expected: "a tfjs model.json",
      });
    }
  }
  if (settings.metrics.includes("judge") && !options.dataset.labels?.attributes.length) {
    throw new UserError(`the dataset (${options.dataset.source}) has no labels to judge`, {
      ...where,
      path: "eval.metrics",
      expected: "kid and fid only, or a labelled dataset (avatars, or a folder with one " +
        "subfolder per class)",
    });
  }
}

/**
 * Evaluates a run's model during and after training (the `eval` section): its {@link hook} is
 * the runner's evaluation hook. Each evaluation samples `eval.samples` images with the run's
 * sampler (its own random stream) and compares them with as many training images.
 */
export class RunEvaluator {
  #config: Experiment;
  #ctx: RunEvalContext;
  #eval: EvalConfig;
  #schedule: Schedule;
  #totalSteps: number;
  #network: FeatureNetwork;
  #judge: Judge | null;

  private constructor(
    config: Experiment,
    ctx: RunEvalContext,
    parts: { network: FeatureNetwork; judge: Judge | null },
  ) {
    this.#config = config;
    this.#ctx = ctx;
    this.#eval = config.eval!;
    this.#schedule = makeSchedule(config.schedule);
    this.#totalSteps = plannedSteps(ctx.dataset.count, config.train).total;
    this.#network = parts.network;
    this.#judge = parts.judge;
  }

  /** Loads the feature network (and trains or loads the judge); null without an `eval` section. */
  static async start(config: Experiment, ctx: RunEvalContext): Promise<RunEvaluator | null> {
    const settings = config.eval;
    if (!settings) return null;
    const network = await loadFeatureNetwork({
      resize: settings.resize,
      modelPath: settings.features === undefined
        ? undefined
        : resolve(dirname(ctx.experimentFile), settings.features),
    });
    let judge: Judge | null = null;
    if (settings.metrics.includes("judge")) {
      ctx.log("eval: training the attribute judge (cached by dataset)...");
      judge = await trainJudge(labelledFromDataset(ctx.dataset), {
        seed: config.seed,
        cacheDir: ctx.cacheDir ? join(ctx.cacheDir, "judge") : undefined,
        log: ctx.log,
      });
      ctx.log(
        `  judge held-out accuracy: ${
          Object.entries(judge.accuracy).map(([k, v]) => `${k} ${v.toFixed(3)}`).join(", ")
        }`,
      );
    }
    return new RunEvaluator(config, ctx, { network, judge });
  }

  /**
   * The runner's hook: after epoch e (0-based) it evaluates when `eval.every` divides e + 1 (the
   * last epoch is left to the final evaluation) and appends to eval.jsonl; the final evaluation
   * is appended with `"final": true` and its numbers are returned for the manifest summary.
   */
  hook: EvaluationHook = async (point) => {
    const started = performance.now();
    if (!point.final) {
      const epoch = point.epoch + 1;
      const every = this.#eval.every;
      if (every === undefined || epoch % every !== 0 || point.step >= this.#totalSteps) return;
      const e = await this.evaluate(point.denoise, {
        epoch,
        step: point.step,
        stream: `eval/sample/epoch-${epoch}`,
      });
      if (e) await this.#append(point.dir, e, (performance.now() - started) / 1000);
      return;
    }
    const e = await this.evaluate(point.denoise, {
      epoch: point.epoch + 1,
      step: point.step,
      stream: "eval/sample/final",
    });
    if (!e) return {};
    await this.#append(point.dir, { ...e, final: true }, (performance.now() - started) / 1000);
    return evaluationSummary(e);
  };

  /** Samples `eval.samples` images with `denoise` and evaluates them (null: aborted). */
  async evaluate(
    denoise: Denoiser,
    options: { epoch: number; step: number; stream: string },
  ): Promise<RunEvaluation | null> {
    const config = this.#config;
    const { dataset, log } = this.#ctx;
    const settings = this.#eval;
    log(`eval after epoch ${options.epoch}: sampling ${settings.samples} images...`);
    const samples = await sampleImageSet(denoise, this.#schedule, {
      sampler: config.sampler,
      prediction: config.model.prediction,
      count: settings.samples,
      size: dataset.size,
      rng: deriveRng(config.seed, options.stream),
      log,
      signal: this.#ctx.signal,
    });
    if (!samples) return null;
    const metrics = settings.metrics.filter((m): m is FeatureMetric => m !== "judge");
    const result = await evaluateSamples(samples, {
      network: this.#network,
      dataset,
      metrics,
      kidSubsets: settings.kidSubsets,
      kidSubsetSize: settings.kidSubsetSize,
      seed: config.seed,
      floor: settings.floor,
      backend: this.#ctx.backend,
      samplesProtocol: { ...samplerProtocol(config, this.#schedule), stream: options.stream },
      referenceDescription: `training set ${JSON.stringify(config.dataset)} at ` +
        `${config.transform.size} px (content sha256 below)`,
      cacheDir: this.#ctx.cacheDir ? join(this.#ctx.cacheDir, "eval") : undefined,
    });
    const out: RunEvaluation = { epoch: options.epoch, step: options.step, ...result };
    if (this.#judge) {
      const scored = await attributeDistance(this.#judge, samples.pixels, samples.count);
      out.judge = {
        tv: scored.mean,
        perAttribute: scored.perAttribute,
        accuracy: this.#judge.accuracy,
      };
    }
    log(`  ${formatEvaluation(out)}`);
    return out;
  }

  /** Appends an evaluation to eval.jsonl (replacing lines of its step or later) and its time. */
  async #append(dir: string, e: RunEvaluation & { final?: boolean }, seconds: number) {
    const keep = async (name: string) => {
      let text = "";
      try {
        text = await Deno.readTextFile(join(dir, name));
      } catch {
        // first evaluation
      }
      return text.split("\n").filter((l) => l !== "" && JSON.parse(l).step < e.step)
        .map((l) => l + "\n").join("");
    };
    const { epoch, step, final, metrics, floor, judge, protocol } = e;
    const line = JSON.stringify({ step, epoch, final, metrics, floor, judge, protocol });
    await writeFileAtomic(join(dir, "eval.jsonl"), (await keep("eval.jsonl")) + line + "\n");
    const timing = JSON.stringify({ step, epoch, final, seconds: +seconds.toFixed(3) });
    await writeFileAtomic(
      join(dir, "eval_timings.jsonl"),
      (await keep("eval_timings.jsonl")) + timing + "\n",
    );
  }

  /** Frees the feature network and the judge. */
  dispose(): void {
    this.#network.dispose();
    this.#judge?.dispose();
  }

  /** {@linkcode dispose}, for `using`. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** The numbers of an evaluation as flat summary keys (what `diff` and `runs` show). */
export function evaluationSummary(e: RunEvaluation): Record<string, number> {
  const out: Record<string, number> = { ...e.metrics };
  for (const key of Object.keys(e.metrics)) if (key.endsWith("_std")) delete out[key];
  const fidN = e.protocol.fid?.n ?? e.protocol.samples.count;
  out.eval_n = fidN;
  if (e.floor) {
    for (const [k, v] of Object.entries(e.floor)) {
      if (k !== "n" && !k.endsWith("_std")) out[`floor_${k}`] = v;
    }
  }
  if (e.judge) {
    out.judge_tv = e.judge.tv;
    const acc = Object.values(e.judge.accuracy);
    out.judge_accuracy = acc.reduce((s, v) => s + v, 0) / acc.length;
  }
  return out;
}

function fmt(v: number): string {
  return Math.abs(v) < 0.01 && v !== 0 ? v.toExponential(2) : v.toPrecision(4);
}

/** One line: `kid_iv3m5 1.2e-3 ± 2.0e-4, fid_iv3m5 12.3 (N 256); floor ...`. */
export function formatEvaluation(
  e: Pick<RunEvaluation, "metrics" | "floor" | "judge" | "protocol">,
): string {
  const parts: string[] = [];
  const line = (m: Record<string, number>) =>
    Object.entries(m).filter(([k]) => !k.endsWith("_std") && k !== "n").map(([k, v]) =>
      m[`${k}_std`] !== undefined ? `${k} ${fmt(v)} ± ${fmt(m[`${k}_std`])}` : `${k} ${fmt(v)}`
    ).join(", ");
  parts.push(`${line(e.metrics)} (N ${e.protocol.fid?.n ?? e.protocol.samples.count})`);
  if (e.floor) parts.push(`real-vs-real floor: ${line(e.floor)} (N ${e.floor.n})`);
  if (e.judge) parts.push(`judge TV ${fmt(e.judge.tv)}`);
  return parts.join("; ");
}
