/**
 * `deno task sample <run>`: samples a trained run again, without training, into
 * `<run>/samples/seed-<seed>-<hash8>/` (hash8: of the sampler section and the seed), with the
 * run's checkpoint (its EMA weights when it kept some) and the sampling loop the run used, on
 * the engine `sampler.engine` names (ONNX Runtime caches its export as checkpoint/model.onnx).
 * Only the seed and the `sampler` section may change; the run folder's own files are left as
 * they are, and `samples/` is not one of its artifacts.
 * @module
 */
import { join } from "node:path";
import type { Experiment } from "../../schemas/experiment.ts";
import { canonicalJson, describeSampler, loadExperiment } from "../config/mod.ts";
import { UserError } from "../errors.ts";
import { sha256Hex, writeFileAtomic } from "../io/files.ts";
import { runManifest, verifyArtifacts } from "./manifest.ts";
import { writeSamples } from "./sample_phase.ts";
import { RunSession } from "./session.ts";
import type { ProgressReporter } from "./types.ts";

/** Options of {@linkcode resampleRun}. */
export interface ResampleOptions {
  /** `sampler.…=value` overrides, as `--set` takes them. */
  sets?: string[];
  /** Seed of the sampling noise (default: the run's). */
  seed?: number;
  /** Number of images (`sampler.count`). */
  count?: number;
  /** Where progress lines go (default console.log). */
  log?: (line: string) => void;
  /** Progress bars (sampling steps). */
  progress?: ProgressReporter;
  /** Stops after the current sampling batch when aborted (nothing is written). */
  signal?: AbortSignal;
}

/** Where {@linkcode resampleRun} wrote, and with what. */
export interface ResampleResult {
  /** The sub-folder written (`<run>/samples/seed-<seed>-<hash8>`), or null when aborted. */
  dir: string | null;
  /** The config sampled with (the run's, with the seed and sampler changes). */
  config: Experiment;
}

/** The sampler section and seed of a re-sampling, as the sub-folder's name hashes them. */
function samplingFolder(run: string, config: Experiment): string {
  const hash = sha256Hex(canonicalJson({ seed: config.seed, sampler: config.sampler }));
  return join(run, "samples", `seed-${config.seed}-${hash.slice(0, 8)}`);
}

/** Samples the trained run in `run` again (see the module documentation). */
export async function resampleRun(
  run: string,
  options: ResampleOptions = {},
): Promise<ResampleResult> {
  const log = options.log ?? ((line: string) => console.log(line));
  const manifest = await runManifest(run);
  const sets = [...(options.sets ?? [])];
  for (const set of sets) {
    if (!/^sampler(\.|=)/.test(set)) {
      throw new UserError(`--set ${set}: only the sampler can change without retraining`, {
        expected: "--set sampler.<field>=<value> (a new experiment for anything else)",
      });
    }
  }
  if (options.count !== undefined) sets.push(`sampler.count=${options.count}`);
  // The run's resolved config, validated again with the changes (errors name config.json).
  const loaded = await loadExperiment(join(run, "config.json"), { sets, seed: options.seed });
  const { config } = loaded;
  const problems = await verifyArtifacts(run, { manifest, prefix: "checkpoint/" });
  const hasCheckpoint = Object.keys(manifest.artifacts).some((p) => p.startsWith("checkpoint/"));
  if (!hasCheckpoint || problems.length > 0) {
    throw new UserError(
      `${run}: ${hasCheckpoint ? "its checkpoint does not match its manifest" : "no checkpoint"}` +
        (problems.length ? `:\n  ${problems.join("\n  ")}` : ""),
      { expected: "a trained run with an intact checkpoint/" },
    );
  }
  if (manifest.status !== "complete") {
    log(`note: the run is ${manifest.status}; sampling its last checkpoint`);
  }

  // A conditional model: the label sizes and what to sample come from its dataset (cached).
  const checkpoint = join(run, "checkpoint");
  await using session = await RunSession.open(loaded, {
    purpose: "sample",
    experimentFile: manifest.source.file,
    dataset: "labels",
    checkpoint,
    log,
  });
  const engine = await session.startSampling(checkpoint);
  const step = session.checkpoint!.step;
  const count = session.conditioning?.plan.count ?? config.sampler.count;
  const how = describeSampler({ ...config.sampler, count }, session.schedule.timesteps);
  log(`sampling ${run} at step ${step}, seed ${config.seed}: ${how}`);
  const started = performance.now();
  // Written into a scratch folder that becomes the sub-folder only when sampling completes.
  const dir = samplingFolder(run, config);
  const scratch = `${dir}.partial-${Deno.pid}`;
  await Deno.mkdir(scratch, { recursive: true });
  try {
    const done = await writeSamples(session, {
      dir: scratch,
      options: { log, signal: options.signal, progress: options.progress },
    });
    if (!done) return { dir: null, config };
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.rename(scratch, dir);
  } finally {
    await Deno.remove(scratch, { recursive: true }).catch(() => {});
  }
  const record = {
    run,
    configHash: manifest.configHash,
    step,
    seed: config.seed,
    overrides: loaded.overrides,
    sampler: config.sampler,
    backend: session.backend.name,
    engine: engine.info,
    weights: session.weights,
    seconds: +((performance.now() - started) / 1000).toFixed(1),
    createdAt: new Date().toISOString(),
  };
  await writeFileAtomic(join(dir, "sample.json"), JSON.stringify(record, null, 2) + "\n");
  log(`samples: ${dir}`);
  return { dir, config };
}
