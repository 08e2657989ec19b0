/**
 * Which points of a sweep to start, and in what order: complete points are skipped, points
 * that another process is running are left to it, and points that share a training config
 * (`trainingHash`) train once: the first one trains, the others wait for it and reuse its
 * checkpoint through the training cache (unless a complete run with that training exists).
 * @module
 */
import { findReusableTraining } from "../run/training_cache.ts";
import type { IndexPoint, SweepIndex } from "./sweep_index.ts";

/** A point to start. */
export interface LaunchItem {
  /** The point's index. */
  index: number;
  /** The index of the point that trains for it (start after that one ended), or null. */
  after: number | null;
}

/** The launch of a sweep. */
export interface LaunchPlan {
  /** Points to start, in index order. */
  items: LaunchItem[];
  /** Points already complete. */
  complete: IndexPoint[];
  /** Points another process is running now, or that an earlier Slurm job still holds. */
  busy: IndexPoint[];
}

/**
 * Plans the launch of `index` (statuses refreshed) whose runs live under `outRoot`: see the
 * module documentation.
 */
export async function planLaunch(index: SweepIndex, outRoot: string): Promise<LaunchPlan> {
  const complete = index.points.filter((p) => p.status === "complete");
  const isBusy = (p: IndexPoint) => p.status === "running" || p.status === "queued";
  const busy = index.points.filter(isBusy);
  const todo = index.points.filter((p) => p.status !== "complete" && !isBusy(p));
  const trainer = new Map<string, number | null>();
  const items: LaunchItem[] = [];
  for (const point of todo) {
    if (!trainer.has(point.trainingHash)) {
      const reusable = await findReusableTraining(outRoot, { hash: point.trainingHash });
      trainer.set(point.trainingHash, reusable ? null : point.index);
      items.push({ index: point.index, after: null });
      continue;
    }
    items.push({ index: point.index, after: trainer.get(point.trainingHash) ?? null });
  }
  return { items, complete, busy };
}
