/**
 * Sample quality: the `eval` experiment section, `deno task eval` and `deno task fid`.
 *
 * - {@link RunEvaluator}: evaluation during training (every `eval.every` epochs, into
 *   `eval.jsonl`) and at the end (also into the manifest summary, so `diff` and `runs` show it).
 * - {@link compareImageSets}: KID and FID between two image sets (`deno task fid`).
 * - The building blocks: {@link loadFeatureNetwork}, {@link evaluateSamples}, {@link kid},
 *   {@link fid}, and the attribute judge ({@link trainJudge}, {@link attributeDistance},
 *   {@link judgeAccuracy}).
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
import {
  compareFeatures,
  type EvalResult,
  evaluateSamples,
  type FeatureMetric,
  metricNames,
} from "./evaluate.ts";
import { type FeatureNetwork, loadFeatureNetwork } from "./features.ts";
import { type ImageSet, pickImages, sampleImageSet } from "./images.ts";
import { attributeDistance, type Judge, labelledFromDataset, trainJudge } from "./judge.ts";

export {
  compareFeatures,
  datasetContentHash,
  type EvalResult,
  evaluateSamples,
  metricNames,
  type Protocol,
  referenceFeatures,
} from "./evaluate.ts";
export {
  DEFAULT_LAYER,
  DEFAULT_RESIZE,
  type FeatureNetwork,
  type FeatureNetworkInfo,
  loadFeatureNetwork,
  NSFWJS_PACKAGE,
} from "./features.ts";
export {
  folderImageSet,
  gridImageSet,
  type ImageSet,
  pickImages,
  sampleImageSet,
  toUint8Images,
} from "./images.ts";
export {
  type AttributeDescriptor,
  attributeDistance,
  type Judge,
  judgeAccuracy,
  labelledFromDataset,
  type LabelledImages,
  trainJudge,
} from "./judge.ts";
export { featureStats, fid, frechetDistance, kid, type KidResult } from "./metrics.ts";

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

/** Where the runner calls the evaluator: after an epoch, or at the end (`final`). */
export interface RunEvalPoint {
  /** The run folder: eval.jsonl and eval_timings.jsonl go there. */
  dir: string;
  /** Optimizer steps done. */
  step: number;
  /** Epoch of the last step (0-based). */
  epoch: number;
  /** Whether this is the evaluation at the end of the run. */
  final: boolean;
  /** The network as the samplers see it (the EMA weights when the run keeps them). */
  denoise: Denoiser;
}

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
  hook = async (point: RunEvalPoint): Promise<Record<string, number> | void> => {
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

/** Options of {@link compareImageSets}. */
export interface CompareOptions {
  /** The feature network. */
  network: FeatureNetwork;
  /** Metrics (default both). */
  metrics?: FeatureMetric[];
  /** KID subsets (default 100). */
  kidSubsets?: number;
  /** KID subset size (default 1000). */
  kidSubsetSize?: number;
  /** Seed of the KID subsets and of the FID subset (default 0). */
  seed?: number;
  /** The tfjs backend (recorded). */
  backend: string;
}

/**
 * KID and FID between two image sets (pytorch-fid's command). KID uses every image; FID is
 * computed at equal N: the larger set is cut to a seeded random subset of the smaller size.
 */
export async function compareImageSets(
  a: ImageSet,
  b: ImageSet,
  options: CompareOptions,
): Promise<EvalResult> {
  const { network } = options;
  const seed = options.seed ?? 0;
  const metrics = options.metrics ?? ["kid", "fid"];
  const n = Math.min(a.count, b.count);
  const ordered = (set: ImageSet, name: string): ImageSet =>
    set.count === n
      ? set
      : pickImages(set, deriveRng(seed, `fid/subset/${name}`).permutation(set.count));
  const fa = await network.extract(ordered(a, "a").pixels, { count: a.count, size: a.size });
  const fb = await network.extract(ordered(b, "b").pixels, { count: b.count, size: b.size });
  const settings = {
    metrics,
    kidSubsets: options.kidSubsets ?? 100,
    kidSubsetSize: options.kidSubsetSize ?? 1000,
    seed,
    network: network.info,
  };
  const compared = compareFeatures({ features: fa, count: a.count }, {
    features: fb,
    count: b.count,
  }, settings);
  return {
    metrics: compared.values,
    protocol: {
      network: network.info,
      samples: { source: a.source, count: a.count },
      reference: { source: b.source, count: b.count },
      ...(metrics.includes("fid") ? { fid: { n } } : {}),
      ...(metrics.includes("kid")
        ? {
          kid: {
            kernel: "(x·y/d + 1)^3, unbiased MMD²",
            subsets: settings.kidSubsets,
            subsetSize: compared.kidSubsetSize,
            seed,
          },
        }
        : {}),
      backend: options.backend,
    },
  };
}

/** The names a result's metrics go by, for messages: e.g. `kid_iv3m5, fid_iv3m5`. */
export function describeMetrics(network: FeatureNetwork): string {
  const names = metricNames(network.info);
  return `${names.kid}, ${names.fid}`;
}
