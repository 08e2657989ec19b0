/**
 * The training cache: the resolved config splits into what determines training (everything but
 * the sampling-only keys) and what only affects sampling. A new experiment whose training part
 * equals that of a complete run reuses that run's checkpoint and only samples.
 * @module
 */
import type { Experiment } from "../../schemas/experiment.ts";
import { canonicalJson } from "../config/mod.ts";
import { sha256Hex } from "../io/files.ts";
import { listRuns } from "./list.ts";
import { type Manifest, verifyArtifacts } from "./manifest.ts";

/**
 * Top-level keys that do not influence training. Anything else (including sections added later)
 * counts as training, so a new field can never make a stale checkpoint look reusable.
 */
export const SAMPLING_ONLY_KEYS: readonly string[] = ["name", "description", "sampler", "recovery"];

/** The part of a resolved config that determines the trained weights. */
export function trainingPart(config: Experiment): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(config)) {
    if (!SAMPLING_ONLY_KEYS.includes(key) && key !== "$schema") out[key] = value;
  }
  // An evaluation at the end only is like sampling; one every few epochs is part of training's
  // record (eval.jsonl), which a reused training would lack.
  if (config.eval && config.eval.every === undefined) delete out.eval;
  return out;
}

/** sha256 of the canonical JSON of {@link trainingPart}. */
export function trainingHash(config: Experiment): string {
  return sha256Hex(canonicalJson(trainingPart(config)));
}

/** A complete run whose checkpoint can stand in for training. */
export interface ReusableRun {
  /** Its run folder. */
  dir: string;
  /** Its manifest. */
  manifest: Manifest;
}

/**
 * The first (in path order) complete run under `outRoot` with training hash `hash` whose
 * checkpoint files still match the hashes in its manifest and, when `options.contentHash` is given,
 * whose manifest records no other dataset content hash; null when there is none.
 */
export async function findReusableTraining(
  outRoot: string,
  options: { hash: string; exclude?: string; contentHash?: string },
): Promise<ReusableRun | null> {
  for (const { dir, manifest } of await listRuns(outRoot)) {
    if (dir === options.exclude) continue;
    if (manifest.status !== "complete" || manifest.trainingHash !== options.hash) continue;
    // The same config on other data (a folder whose images changed) is another training.
    const recorded = manifest.dataset?.contentHash;
    if (options.contentHash && recorded && recorded !== options.contentHash) continue;
    if ((await verifyArtifacts(dir, { manifest, prefix: "checkpoint/" })).length === 0) {
      return { dir, manifest };
    }
  }
  return null;
}
