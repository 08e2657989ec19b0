/**
 * `deno task eval <run>`: samples N images from a trained run (its EMA weights when it keeps
 * them, on the engine `sampler.engine` names) and evaluates them against its dataset, writing
 * `eval.json` in the run.
 * @module
 */
import { join } from "node:path";
import { ExperimentSchema } from "../../schemas/experiment.ts";
import { loadExperiment } from "../config/mod.ts";
import type { Denoiser } from "../diffusion/ddpm.ts";
import { UserError } from "../errors.ts";
import { evaluationSummary, type RunEvaluation, RunEvaluator } from "../eval/mod.ts";
import { writeFileAtomic } from "../io/files.ts";
import type { EngineInfo } from "../onnx/mod.ts";
import { runManifest } from "./manifest.ts";
import { RunSession } from "./session.ts";

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
  // A conditional model is evaluated unconditionally (with its null label).
  const checkpoint = join(runDir, "checkpoint");
  await using session = await RunSession.open({ ...loaded, config }, {
    purpose: "sample",
    experimentFile: manifest.source.file,
    checkpoint,
    log,
  });
  const dataset = session.dataset!;
  // The samples come from the engine `sampler.engine` names (--set sampler.engine=onnxruntime).
  const engine = await session.startSampling(checkpoint);
  using evaluator = await RunEvaluator.start(config, {
    experimentFile: manifest.source.file,
    dataset,
    backend: session.backend.name,
    log,
    cacheDir: options.cacheDir,
  });
  // Time inside the network, to tell the engine's share of the wall time from the features'.
  let networkMs = 0;
  const timed: Denoiser = async (x, t) => {
    const start = performance.now();
    const out = await engine.denoise(x, t);
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
}
