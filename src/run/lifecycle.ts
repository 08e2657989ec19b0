/**
 * The life cycle of a run folder: open (new, or resumed from an interrupted run), checkpoint,
 * and end (complete, interrupted or failed), each step recorded in `manifest.json` with the
 * sha256 of every artifact so far.
 *
 * A run-folder lock belongs in {@linkcode RunRecord.open} (taken before the folder is touched)
 * and {@linkcode RunRecord.end} (released): every path that writes a run folder goes through them.
 * @module
 */
import { join } from "node:path";
import type { BackendInfo } from "../backend/mod.ts";
import type { LoadedExperiment } from "../config/mod.ts";
import { UserError } from "../errors.ts";
import { writeFileAtomic } from "../io/files.ts";
import {
  type CheckpointParts,
  type CheckpointState,
  loadCheckpoint,
  saveCheckpoint,
} from "../train/checkpoint.ts";
import { prepareRunFolder } from "./folder.ts";
import { keptLines } from "./logs.ts";
import {
  gitState,
  hasCheckpoint,
  hashArtifacts,
  type Manifest,
  readManifest,
  type RunStatus,
  softwareVersions,
  verifyArtifacts,
  writeManifest,
} from "./manifest.ts";

/**
 * The manifest of the interrupted or failed run in `dir` that `--resume` continues, after
 * checking that its checkpoint still matches the hashes recorded. Throws a
 * {@linkcode UserError} when there is no such run, it has no checkpoint (it failed before its
 * first one) or its checkpoint was altered.
 */
export async function resumableManifest(dir: string): Promise<Manifest> {
  const manifest = await readManifest(dir);
  if (manifest === null) {
    throw new UserError(`--resume: there is no run of this experiment and seed at ${dir}`, {
      expected: "an interrupted run folder (start the run without --resume)",
    });
  }
  if (manifest.status === "complete") {
    throw new UserError(`--resume: the run at ${dir} is already complete`, {
      expected: "an interrupted or failed run (use --force to run it again)",
    });
  }
  if (!hasCheckpoint(manifest)) {
    const why = manifest.error ? ` (${manifest.error.split("\n")[0]})` : "";
    throw new UserError(
      `--resume: the run at ${dir} ${
        manifest.status === "failed" ? "failed" : "stopped"
      } before writing any checkpoint${why}: there is nothing to continue`,
      { expected: "a run with a checkpoint (run it again without --resume: it starts over)" },
    );
  }
  const problems = await verifyArtifacts(dir, { manifest, prefix: "checkpoint/" });
  if (problems.length > 0) {
    throw new UserError(
      `--resume: the checkpoint of ${dir} does not match its manifest and was not loaded:\n  ` +
        problems.join("\n  "),
      { expected: "an intact checkpoint (run again with --force to start over)" },
    );
  }
  return manifest;
}

/**
 * The step of the checkpoint that `manifest` records in `dir` (its state.json), or null when it
 * records none.
 */
async function recordedCheckpointStep(dir: string, manifest: Manifest): Promise<number | null> {
  if (manifest.artifacts["checkpoint/state.json"] === undefined) return null;
  try {
    const state = JSON.parse(await Deno.readTextFile(join(dir, "checkpoint", "state.json")));
    return typeof state.step === "number" ? state.step : null;
  } catch {
    return null;
  }
}

/** What a new run's manifest records besides the config. */
export interface RunStart {
  /** The loaded experiment (config, file, extends chain, overrides). */
  loaded: LoadedExperiment;
  /** sha256 of the resolved config, and of its training part. */
  hashes: { config: string; training: string };
  /** The backend that runs, and why it was chosen. */
  backend: BackendInfo;
  /** Numbers known before training (parameters, dataset size, ᾱ_T, ...). */
  summary: Manifest["summary"];
  /** The data trained on (source, count, content hash, labels, skipped files). */
  dataset?: Manifest["dataset"];
  /** Versions recorded besides Deno's (tfjs). */
  versions: Record<string, string>;
  /** The manifest of the run `--resume` continues (then the folder is kept), or null. */
  previous: Manifest | null;
  /** Replace a complete run of the same config. */
  force: boolean;
  /** The ddpm-lab checkout, for the git state. */
  projectDir: string;
}

/** A run folder being written: its manifest, kept current on disk. */
export class RunRecord {
  /** The run folder. */
  readonly dir: string;
  /** The manifest; {@linkcode save} writes it. */
  readonly manifest: Manifest;
  /** The step of the checkpoint on disk that the manifest's hashes describe, or null. */
  checkpointStep: number | null;

  private constructor(dir: string, manifest: Manifest, checkpointStep: number | null = null) {
    this.dir = dir;
    this.manifest = manifest;
    this.checkpointStep = checkpointStep;
  }

  /**
   * Starts the run in `dir`: for a new run, clears the folder (refusing a complete run unless
   * `force`), writes config.json and a `running` manifest, and removes the folder again when
   * it cannot (a full disk: nothing half-written is left); for a resumed one, marks it running
   * again.
   */
  static async open(dir: string, start: RunStart): Promise<RunRecord> {
    const { previous } = start;
    if (previous) {
      return await new RunRecord(dir, {
        ...previous,
        status: "running",
        error: undefined,
        resumedAt: [...(previous.resumedAt ?? []), new Date().toISOString()],
      }, await recordedCheckpointStep(dir, previous)).save();
    }
    await prepareRunFolder(dir, { force: start.force });
    try {
      return await RunRecord.#create(dir, start);
    } catch (err) {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw err;
    }
  }

  static async #create(dir: string, start: RunStart): Promise<RunRecord> {
    const { loaded } = start;
    const config = loaded.config;
    await writeFileAtomic(join(dir, "config.json"), JSON.stringify(config, null, 2) + "\n");
    return await new RunRecord(dir, {
      format: 1,
      name: config.name,
      seed: config.seed,
      configHash: start.hashes.config,
      trainingHash: start.hashes.training,
      status: "running",
      source: { file: loaded.file, chain: loaded.chain, overrides: loaded.overrides },
      versions: softwareVersions(start.versions),
      backend: { ...start.backend },
      git: await gitState(start.projectDir),
      startedAt: new Date().toISOString(),
      summary: start.summary,
      dataset: start.dataset,
      artifacts: {},
      volatileArtifacts: {},
    }).save();
  }

  /** The checkpoint folder of the run. */
  get checkpointDir(): string {
    return join(this.dir, "checkpoint");
  }

  /** Writes the manifest. */
  async save(): Promise<this> {
    await writeManifest(this.dir, this.manifest);
    return this;
  }

  /**
   * Writes a checkpoint at `state` (all its files or none: ../train/checkpoint.ts) and records
   * its hashes in the manifest at once.
   */
  async checkpoint(parts: CheckpointParts, state: { step: number; epoch: number }): Promise<void> {
    await saveCheckpoint(this.checkpointDir, { ...parts, state });
    this.checkpointStep = state.step;
    Object.assign(this.manifest, await hashArtifacts(this.dir));
    await this.save();
  }

  /**
   * Appends one line to `evaluations.jsonl` (the numbers of an evaluation during training),
   * replacing the lines of its step or later (a resumed run evaluates those steps again).
   */
  async appendEvaluation(line: Record<string, number>): Promise<void> {
    const path = join(this.dir, "evaluations.jsonl");
    await writeFileAtomic(
      path,
      (await keptLines(path, line.step - 1)) + JSON.stringify(line) + "\n",
    );
  }

  /**
   * Ends the run with `status` (and the error of a failed run), hashing every artifact. A
   * failed run keeps the checkpoint hashes of its last complete checkpoint, so that `--resume`
   * loads only a checkpoint that {@linkcode checkpoint} finished.
   */
  async end(status: RunStatus, error?: unknown): Promise<void> {
    this.manifest.status = status;
    if (error !== undefined) {
      this.manifest.error = error instanceof Error ? error.message : String(error);
    }
    this.manifest.endedAt = new Date().toISOString();
    const recorded = this.manifest.artifacts;
    const hashes = await hashArtifacts(this.dir);
    if (status === "failed") {
      const isCheckpoint = (p: string) => p.startsWith("checkpoint/");
      hashes.artifacts = Object.fromEntries([
        ...Object.entries(hashes.artifacts).filter(([p]) => !isCheckpoint(p)),
        ...Object.entries(recorded).filter(([p]) => isCheckpoint(p)),
      ].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0));
    }
    Object.assign(this.manifest, hashes);
    await this.save();
  }

  /**
   * Takes over the training of the complete run `source` (same training config): copies its
   * checkpoint and metrics, loads the weights (and the EMA) into `parts`, and records the reuse.
   */
  async reuseTraining(
    source: string,
    parts: Pick<CheckpointParts, "model" | "ema">,
  ): Promise<CheckpointState> {
    const from = (await readManifest(source))!;
    await Deno.mkdir(join(this.dir, "checkpoint"), { recursive: true });
    for (const rel of Object.keys(from.artifacts)) {
      // model.onnx is not training output: the sampling engine exports it again when needed.
      const onnx = rel === "checkpoint/model.onnx";
      if ((rel.startsWith("checkpoint/") && !onnx) || rel === "metrics.jsonl") {
        await Deno.copyFile(join(source, rel), join(this.dir, rel));
      }
    }
    const state = await loadCheckpoint(this.checkpointDir, parts);
    this.manifest.reusedTraining = { dir: source, name: from.name, configHash: from.configHash };
    const keys = ["steps", "lossMean50", "finalLoss", "minLoss", "trainSeconds", "trainPeakRssMiB"];
    for (const key of keys) {
      this.manifest.summary[key] = from.summary[key] ?? null;
    }
    return state;
  }
}
