/**
 * `manifest.json` of a run folder: what ran, where, with which versions, how it ended, and the
 * sha256 of every artifact.
 * @module
 */
import type { DatasetRecord } from "../data/mod.ts";
import { join } from "node:path";
import { listFilesRecursive, sha256File, writeFileAtomic } from "../io/files.ts";

/** How a run ended (`running` while it runs, or when the process was killed outright). */
export type RunStatus = "running" | "complete" | "failed" | "interrupted";

/** The manifest of a run folder. */
export interface Manifest {
  /** Format version of this file. */
  format: 1;
  /** Experiment name. */
  name: string;
  /** Experiment seed. */
  seed: number;
  /** sha256 of the canonical resolved config (config.json). */
  configHash: string;
  /** sha256 of the part of the config that determines training (the training cache's key). */
  trainingHash: string;
  /** The run whose checkpoint this run reused instead of training, if any. */
  reusedTraining?: { dir: string; name: string; configHash: string };
  /** ISO times at which this run was resumed. */
  resumedAt?: string[];
  /**
   * Each time the run stopped to be requeued by Slurm (its warning before the time limit): when,
   * at which step (its checkpoint) and the job (`scontrol requeue <job>`).
   */
  requeues?: { at: string; step: number; job: string }[];
  /** Run state. */
  status: RunStatus;
  /** Error message of a failed run. */
  error?: string;
  /** The experiment file, its extends chain and the command-line overrides. */
  source: { file: string; chain: string[]; overrides: string[] };
  /** Software versions. */
  versions: Record<string, string>;
  /** The backend that ran and why it was chosen. */
  backend: Record<string, unknown>;
  /** What ran the network while sampling (`sampler.engine`) and on which execution provider. */
  engine?: Record<string, unknown>;
  /** Git commit of the ddpm-lab checkout and whether its tree was dirty (null outside git). */
  git: { commit: string; dirty: boolean } | null;
  /** ISO times. */
  startedAt: string;
  /** ISO time the run ended. */
  endedAt?: string;
  /** Numbers worth seeing next to the samples (steps, losses, ᾱ_T, parameter count...). */
  summary: Record<string, number | string | null>;
  /** The data trained on: source, count, content hash, labels and value counts, skipped files. */
  dataset?: DatasetRecord;
  /** sha256 of every deterministic artifact, by path relative to the run folder. */
  artifacts: Record<string, string>;
  /** sha256 of artifacts that differ between identical runs (wall-clock timings). */
  volatileArtifacts: Record<string, string>;
}

/** Artifacts whose bytes depend on wall-clock time, kept out of `artifacts`. */
export const VOLATILE_ARTIFACTS: readonly string[] = ["timings.jsonl", "eval_timings.jsonl"];

/** Git commit and dirty flag of the checkout at `dir`, or null when git or the repo is missing. */
export async function gitState(dir: string): Promise<{ commit: string; dirty: boolean } | null> {
  const git = async (args: string[]): Promise<string | null> => {
    try {
      const out = await new Deno.Command("git", { args, cwd: dir, stdout: "piped", stderr: "null" })
        .output();
      return out.success ? new TextDecoder().decode(out.stdout).trim() : null;
    } catch {
      return null;
    }
  };
  const commit = await git(["rev-parse", "HEAD"]);
  if (commit === null) return null;
  const status = await git(["status", "--porcelain", "--untracked-files=no"]);
  return { commit, dirty: (status ?? "") !== "" };
}

/**
 * Versions of the runtime and of the libraries that shape a run's numbers: Deno's, plus
 * `libraries` (the runner gives tfjs's, so that this module does not load TensorFlow.js).
 */
export function softwareVersions(libraries: Record<string, string> = {}): Record<string, string> {
  return {
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
    ...libraries,
  };
}

/**
 * sha256 of every file of the run folder except manifest.json and `samples/`, split by
 * volatility.
 */
export async function hashArtifacts(
  runDir: string,
): Promise<Pick<Manifest, "artifacts" | "volatileArtifacts">> {
  const artifacts: Record<string, string> = {};
  const volatileArtifacts: Record<string, string> = {};
  for (const rel of await listFilesRecursive(runDir)) {
    // samples/: re-samplings of a trained run (`deno task sample`), not part of the run.
    if (rel === "manifest.json" || rel.startsWith("samples/")) continue;
    const target = VOLATILE_ARTIFACTS.includes(rel) ? volatileArtifacts : artifacts;
    target[rel] = await sha256File(join(runDir, rel));
  }
  return { artifacts, volatileArtifacts };
}

/** Whether `manifest` records a checkpoint (the hashes of its files). */
export function hasCheckpoint(manifest: Manifest): boolean {
  return Object.keys(manifest.artifacts).some((p) => p.startsWith("checkpoint/"));
}

/** Writes manifest.json atomically. */
export async function writeManifest(runDir: string, manifest: Manifest): Promise<void> {
  await writeFileAtomic(join(runDir, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
}

/** Reads a run folder's manifest, or null when there is none or it is not valid JSON. */
export async function readManifest(runDir: string): Promise<Manifest | null> {
  try {
    return JSON.parse(await Deno.readTextFile(join(runDir, "manifest.json"))) as Manifest;
  } catch {
    return null;
  }
}

/**
 * The artifacts under `prefix` (all when empty) whose bytes no longer match the manifest, each
 * as `path: why`; an empty list means they are intact.
 */
export async function verifyArtifacts(
  runDir: string,
  options: { manifest: Manifest; prefix?: string },
): Promise<string[]> {
  const prefix = options.prefix ?? "";
  const expected = Object.entries(options.manifest.artifacts).filter(([p]) => p.startsWith(prefix));
  if (expected.length === 0) return [`${prefix || "artifacts"}: none recorded in the manifest`];
  const problems: string[] = [];
  for (const [rel, hash] of expected) {
    try {
      const actual = await sha256File(join(runDir, rel));
      if (actual !== hash) {
        problems.push(`${rel}: sha256 ${actual.slice(0, 12)}… != ${hash.slice(0, 12)}… recorded`);
      }
    } catch {
      problems.push(`${rel}: missing`);
    }
  }
  return problems;
}

/** How one artifact of two runs compares. */
export type ArtifactStatus = "identical" | "differs" | "only-a" | "only-b";

/** Every path of either artifact map (sorted) and whether its hashes agree. */
export function compareArtifacts(
  a: Record<string, string>,
  b: Record<string, string>,
): { path: string; status: ArtifactStatus }[] {
  const paths = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
  return paths.map((path) => {
    const status: ArtifactStatus = a[path] === undefined
      ? "only-b"
      : b[path] === undefined
      ? "only-a"
      : a[path] === b[path]
      ? "identical"
      : "differs";
    return { path, status };
  });
}
