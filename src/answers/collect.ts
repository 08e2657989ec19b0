/**
 * What the answers are built from, read from disk: a question's `sweep.json` and, for each of its
 * points, the run folder's manifest, config, losses, timings, evaluations, recovery distances,
 * guidance table and pictures. Nothing here computes a number.
 * @module
 */
import { join } from "node:path";
import type { RecoveryDistances } from "../diffusion/recovery.ts";
import { readManifest } from "../run/manifest.ts";
import { indexedPath, readIndex } from "../sweep/sweep_index.ts";

/** One line of eval.jsonl. */
export interface EvalLine {
  /** Epoch after which it ran (1-based). */
  epoch: number;
  /** Step after which it ran. */
  step: number;
  /** The evaluation at the end of the run. */
  final: boolean;
  /** Samples vs reference: `kid_iv3m5`, `kid_iv3m5_std`, `fid_iv3m5`, ... */
  metrics: Record<string, number>;
  /** Real vs real, with its `n`. */
  floor: Record<string, number> | null;
}

/** recovery.json. */
export interface RecoveryFile {
  /** What the distances are. */
  distance: string;
  /** Images per t. */
  count: number;
  /** One entry per t. */
  t: RecoveryDistances[];
}

/** One point of a question's sweep and what its run folder holds. */
export interface AnswerRun {
  /** The point's index in the sweep. */
  index: number;
  /** Swept path -> value. */
  overrides: Record<string, unknown>;
  /** The experiment seed. */
  seed: number;
  /** The run folder (absolute). */
  dir: string;
  /** The manifest's status, or `pending` without a run folder. */
  status: string;
  /** The resolved config (config.json), empty without a run folder. */
  config: Record<string, unknown>;
  /** The manifest summary. */
  summary: Record<string, number | string | null>;
  /** Whether it reused another run's training (its training time is that run's). */
  reused: boolean;
  /** eval.jsonl, in order. */
  evals: EvalLine[];
  /** metrics.jsonl: the loss of every step. */
  losses: { step: number; epoch: number; loss: number }[];
  /** timings.jsonl: the wall-clock seconds at each logged step. */
  timings: { step: number; seconds: number }[];
  /** recovery.json, when the run made one. */
  recovery: RecoveryFile | null;
  /** guidance.json rows (`w` and the metrics), when the run made one. */
  guidance: Record<string, number>[] | null;
  /** Images per guidance weight (samples-labels.json), when the run made one. */
  labelledImages: number | null;
  /** Pictures in the run folder, by file name. */
  images: string[];
  /** ISO times from the manifest. */
  startedAt?: string;
  /** ISO time the run ended. */
  endedAt?: string;
}

/** A question's sweep as found on disk. */
export interface AnswerSweep {
  /** sweep.json (absolute). */
  indexPath: string;
  /** The `--set` overrides the sweep ran with. */
  sets: string[];
  /** Every point, in index order. */
  runs: AnswerRun[];
}

/** Pictures a question may show, by run-folder file name. */
const PICTURES = /^(samples(-w[0-9.]+)?|recovery)\.png$/;

async function jsonLines<T>(path: string): Promise<T[]> {
  const text = await Deno.readTextFile(path).catch(() => "");
  return text.split("\n").filter((l) => l.trim() !== "").flatMap((l) => {
    try {
      return [JSON.parse(l) as T];
    } catch {
      return [];
    }
  });
}

async function json<T>(path: string): Promise<T | null> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as T;
  } catch {
    return null;
  }
}

/** Reads one run folder (a missing or unreadable folder gives a `pending` run without data). */
export async function readAnswerRun(
  dir: string,
  point: { index: number; overrides: Record<string, unknown>; seed: number },
): Promise<AnswerRun> {
  const manifest = await readManifest(dir);
  const images: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isFile && PICTURES.test(entry.name)) images.push(entry.name);
    }
  } catch {
    // no run folder yet
  }
  images.sort();
  const evals = (await jsonLines<Partial<EvalLine>>(join(dir, "eval.jsonl"))).map((e) => ({
    epoch: Number(e.epoch),
    step: Number(e.step),
    final: e.final === true,
    metrics: e.metrics ?? {},
    floor: e.floor ?? null,
  }));
  const labels = await json<{ images?: unknown[] }>(join(dir, "samples-labels.json"));
  return {
    ...point,
    dir,
    status: manifest?.status ?? "pending",
    config: (await json<Record<string, unknown>>(join(dir, "config.json"))) ?? {},
    summary: manifest?.summary ?? {},
    reused: manifest?.reusedTraining !== undefined,
    evals,
    losses: await jsonLines(join(dir, "metrics.jsonl")),
    timings: await jsonLines(join(dir, "timings.jsonl")),
    recovery: await json<RecoveryFile>(join(dir, "recovery.json")),
    guidance: await json<Record<string, number>[]>(join(dir, "guidance.json")),
    labelledImages: Array.isArray(labels?.images) ? labels.images.length : null,
    images,
    ...(manifest?.startedAt ? { startedAt: manifest.startedAt } : {}),
    ...(manifest?.endedAt ? { endedAt: manifest.endedAt } : {}),
  };
}

/** Reads the sweep at `path` (sweep.json or its folder) and its points' run folders, or null. */
export async function readAnswerSweep(path: string): Promise<AnswerSweep | null> {
  const found = await readIndex(path);
  if (!found) return null;
  const runs: AnswerRun[] = [];
  for (const point of found.index.points) {
    runs.push(await readAnswerRun(indexedPath(found.path, point.run), point));
  }
  return { indexPath: found.path, sets: found.index.sets, runs };
}
