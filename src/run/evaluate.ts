/**
 * `deno task eval` and `deno task fid` on run folders: sample N images from a trained run and
 * evaluate them against its dataset (writes `eval.json` in the run), or compare two image sets,
 * each an image folder or a run's `samples.png`.
 * @module
 */
import { join } from "node:path";
import { ExperimentSchema } from "../../schemas/experiment.ts";
import { initBackend } from "../backend/mod.ts";
import { loadExperiment } from "../config/mod.ts";
import { loadDataset } from "../data/mod.ts";
import type { Denoiser } from "../diffusion/ddpm.ts";
import { UserError } from "../errors.ts";
import {
  compareImageSets,
  evaluationSummary,
  folderImageSet,
  gridImageSet,
  type ImageSet,
  loadFeatureNetwork,
  type RunEvaluation,
  RunEvaluator,
} from "../eval/mod.ts";
import { type EvalResult, evaluateSamples } from "../eval/samples_vs_reference.ts";
import { writeFileAtomic } from "../io/files.ts";
import { createModel, withParams } from "../model/mod.ts";
import { createSamplingEngine, type EngineInfo, type SamplingEngine } from "../onnx/mod.ts";
import { deriveRng } from "../rng.ts";
import { tf } from "../tf.ts";
import { resolveConditioning } from "./conditions.ts";
import { loadCheckpoint } from "../train/checkpoint.ts";
import { Ema } from "../train/mod.ts";
import { GradientWorkers } from "../train/parallel/mod.ts";
import { readManifest } from "./manifest.ts";
import { samplingDenoiser, samplingWorkers } from "./runner.ts";

/** Options of {@link evaluateRun}. */
export interface EvaluateRunOptions {
  /** Images to sample (default: the run's `eval.samples`, else 256). */
  samples?: number;
  /** `--set` overrides; only `sampler.*` and `eval.*` paths. */
  sets?: string[];
  /** Progress lines. */
  log?: (line: string) => void;
  /** Cache root (default `<project>/.cache`). */
  cacheDir?: string;
}

async function runManifest(dir: string) {
  const manifest = await readManifest(dir);
  if (manifest === null) {
    throw new UserError(`${dir} is not a run folder (no readable manifest.json)`, {
      expected: "a folder written by `deno task run`, e.g. outputs/<name>/seed-<seed>-<hash>",
    });
  }
  return manifest;
}

/**
 * Samples from a complete run's checkpoint (EMA weights when it keeps them) and evaluates the
 * samples against its dataset; writes `eval.json` in the run folder (not one of its artifacts:
 * `verify` ignores it) and returns it.
 */
export async function evaluateRun(
  runDir: string,
  options: EvaluateRunOptions = {},
): Promise<
  RunEvaluation & {
    engine: EngineInfo;
    networkSeconds: number;
    wallSeconds: number;
    file: string;
  }
> {
  const started = performance.now();
  const log = options.log ?? (() => {});
  const manifest = await runManifest(runDir);
  if (manifest.status !== "complete") {
    throw new UserError(`${runDir} is a ${manifest.status} run`, {
      expected: "a complete run (its final checkpoint)",
    });
  }
  const sets = options.sets ?? [];
  for (const s of sets) {
    if (!/^(sampler|eval)\./.test(s) && !/^(sampler|eval)=/.test(s)) {
      throw new UserError(`--set ${s}: eval can only change the sampler and eval sections`, {
        expected: "--set sampler.<field>=value or --set eval.<field>=value",
      });
    }
  }
  const loaded = await loadExperiment(join(runDir, "config.json"), { sets });
  const base = loaded.config;
  const samples = options.samples ?? base.eval?.samples ?? 256;
  if (!Number.isInteger(samples) || samples < 2) {
    throw new UserError(`--samples ${samples}`, { expected: "an integer >= 2" });
  }
  const config = ExperimentSchema.parse({
    ...base,
    eval: { ...base.eval, samples, every: undefined },
  });
  const backend = await initBackend(config.backend);
  log(`loading dataset (${config.dataset.kind})...`);
  const dataset = await loadDataset(config.dataset, {
    transform: config.transform,
    seed: config.seed,
    experimentFile: manifest.source.file,
  });
  // A conditional model (evaluated unconditionally, with its null label) needs its label sizes.
  const labelSizes = resolveConditioning(config, { labels: dataset.labels })?.labelSizes;
  const model = createModel(config.model, {
    rng: deriveRng(config.seed, "model/init"),
    labelSizes,
  });
  const ema = config.optimizer.ema ? new Ema(model.params, config.optimizer.ema) : null;
  let workers: GradientWorkers | undefined;
  let evaluator: RunEvaluator | null = null;
  let engine: SamplingEngine | undefined;
  try {
    await loadCheckpoint(join(runDir, "checkpoint"), { model, ema });
    workers = await samplingWorkers(config, { backend, labelSizes });
    const tfjs = samplingDenoiser(ema ? withParams(model, ema.params) : model, { workers });
    // The samples come from the engine `sampler.engine` names (--set sampler.engine=onnxruntime).
    engine = await createSamplingEngine(config, {
      tfjs: () => tfjs,
      tfjsBackend: backend.name,
      checkpointDir: join(runDir, "checkpoint"),
      size: dataset.size,
      ...(labelSizes ? { labelSizes } : {}),
      log,
    });
    evaluator = await RunEvaluator.start(config, {
      experimentFile: manifest.source.file,
      dataset,
      backend: backend.name,
      log,
      cacheDir: options.cacheDir,
    });
    // Time inside the network, to tell the engine's share of the wall time from the features'.
    let networkMs = 0;
    const timed: Denoiser = async (x, t) => {
      const start = performance.now();
      const out = await engine!.denoise(x, t);
      networkMs += performance.now() - start;
      return out;
    };
    const result = await evaluator!.evaluate(timed, {
      epoch: config.train.epochs,
      step: Number(manifest.summary.steps ?? 0),
      stream: `eval/sample/command-${samples}`,
    });
    const wallSeconds = +((performance.now() - started) / 1000).toFixed(1);
    const file = join(runDir, "eval.json");
    const out = {
      ...result!,
      summary: evaluationSummary(result!),
      engine: engine.info,
      networkSeconds: +(networkMs / 1000).toFixed(1),
      wallSeconds,
    };
    await writeFileAtomic(file, JSON.stringify(out, null, 2) + "\n");
    return { ...out, file };
  } finally {
    await engine?.close();
    evaluator?.dispose();
    workers?.close();
    model.dispose();
    ema?.dispose();
  }
}

/** Whether `path` is a run folder (has a manifest.json). */
async function isRun(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(join(path, "manifest.json"))).isFile;
  } catch {
    return false;
  }
}

/** A run's samples cut out of its samples.png. */
async function runSamples(dir: string): Promise<ImageSet> {
  await runManifest(dir);
  const config = ExperimentSchema.parse(
    JSON.parse(await Deno.readTextFile(join(dir, "config.json"))),
  );
  let png: Uint8Array;
  try {
    png = await Deno.readFile(join(dir, "samples.png"));
  } catch {
    throw new UserError(`${dir} has no samples.png`, { expected: "a run that finished sampling" });
  }
  return await gridImageSet(png, {
    count: config.sampler.count,
    size: config.transform.size,
    columns: config.sampler.gridColumns,
    source: join(dir, "samples.png"),
  });
}

/** Options of {@link fidCommand}. */
export interface FidOptions {
  /** Resize before the network (default 299). */
  resize?: number;
  /** A tfjs model.json instead of the nsfwjs InceptionV3. */
  features?: string;
  /** KID subsets (default 100). */
  kidSubsets?: number;
  /** KID subset size (default 1000). */
  kidSubsetSize?: number;
  /** Progress lines. */
  log?: (line: string) => void;
}

/**
 * `deno task fid A [B]`: KID and FID between two image sets, each an image folder or a run
 * (its samples.png). With one run only: its samples against its dataset, with the floor.
 */
export async function fidCommand(paths: string[], options: FidOptions = {}): Promise<EvalResult> {
  const log = options.log ?? (() => {});
  if (paths.length < 1 || paths.length > 2) {
    throw new UserError(`expected one run or two folders/runs, got ${paths.length}`, {
      expected: "deno task fid <folderA|run> <folderB|run> [--json]",
    });
  }
  const backend = await initBackend("wasm");
  if (paths.length === 1) {
    if (!(await isRun(paths[0]))) {
      throw new UserError(`${paths[0]} is not a run folder`, {
        expected: "a run folder (its samples against its dataset), or two image folders",
      });
    }
    // the run's own samples: evaluated as saved, not sampled again
    return await samplesAgainstDataset(paths[0], { log, ...options });
  }
  const sets: ImageSet[] = [];
  for (const [i, path] of paths.entries()) {
    const what = i === 0 ? "first folder" : "second folder";
    sets.push(await isRun(path) ? await runSamples(path) : await folderImageSet(path, { what }));
    log(`${sets[i].source}`);
  }
  const network = await loadFeatureNetwork({
    resize: options.resize,
    modelPath: options.features,
  });
  try {
    return await compareImageSets(sets[0], sets[1], {
      network,
      kidSubsets: options.kidSubsets,
      kidSubsetSize: options.kidSubsetSize,
      backend: backend.name,
    });
  } finally {
    network.dispose();
  }
}

/** A run's saved samples against a reference set of as many images of its dataset. */
async function samplesAgainstDataset(dir: string, options: FidOptions): Promise<EvalResult> {
  const manifest = await runManifest(dir);
  const config = ExperimentSchema.parse(
    JSON.parse(await Deno.readTextFile(join(dir, "config.json"))),
  );
  const samples = await runSamples(dir);
  const dataset = await loadDataset(config.dataset, {
    transform: config.transform,
    seed: config.seed,
    experimentFile: manifest.source.file,
  });
  const network = await loadFeatureNetwork({
    resize: options.resize,
    modelPath: options.features,
  });
  try {
    return await evaluateSamples(samples, {
      network,
      dataset,
      metrics: ["kid", "fid"],
      kidSubsets: options.kidSubsets ?? 100,
      kidSubsetSize: options.kidSubsetSize ?? 1000,
      seed: config.seed,
      floor: true,
      backend: tf.getBackend(),
    });
  } finally {
    network.dispose();
  }
}
