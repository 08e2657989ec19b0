/**
 * `deno task fid`: KID and FID between two image sets, each an image folder or a run's
 * `samples.png`, or one run's saved samples against its dataset.
 * @module
 */
import { join } from "node:path";
import { ExperimentSchema } from "../../schemas/experiment.ts";
import { initBackend } from "../backend/mod.ts";
import { loadDataset } from "../data/mod.ts";
import { UserError } from "../errors.ts";
import {
  compareImageSets,
  type EvalResult,
  evaluateSamples,
  folderImageSet,
  gridImageSet,
  type ImageSet,
  loadFeatureNetwork,
} from "../eval/mod.ts";
import { tf } from "../tf.ts";
import { runManifest } from "./manifest.ts";

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

/** Options of {@link fidBetween}. */
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
export async function fidBetween(paths: string[], options: FidOptions = {}): Promise<EvalResult> {
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
