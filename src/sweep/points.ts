/**
 * The points of a sweep: pure expansion of a `sweep` map (path -> values) into a grid or a zip,
 * each combination repeated for every seed, and each point as the `--set` overrides that make it.
 * @module
 */
import type { SweepConfig } from "../../schemas/experiment.ts";

/** One point of a sweep: the values it sets and the seed it runs with. */
export interface SweepPoint {
  /** Position in the sweep (what `--sweep-index` and `SLURM_ARRAY_TASK_ID` name). */
  index: number;
  /** Path -> value, in the order of the sweep's paths. */
  overrides: Record<string, unknown>;
  /** The seed of this point. */
  seed: number;
}

/** The swept paths of a `sweep` map (every key but `mode` and `seeds`) and their values. */
export function sweepAxes(sweep: SweepConfig): [string, unknown[]][] {
  return Object.entries(sweep).filter(([key]) => key !== "mode" && key !== "seeds") as [
    string,
    unknown[],
  ][];
}

/**
 * Expands a sweep into its points: `grid` takes every combination (the last path varies
 * fastest, like `itertools.product`), `zip` the i-th value of every path; every combination is
 * repeated for each seed (seeds vary fastest). Throws a plain Error when zip lists differ in
 * length (the caller names the file).
 */
export function expandSweep(sweep: SweepConfig, options: { seed: number }): SweepPoint[] {
  const axes = sweepAxes(sweep);
  const seeds = sweep.seeds ?? [options.seed];
  let combos: Record<string, unknown>[];
  if (axes.length === 0) combos = [{}];
  else if (sweep.mode === "zip") {
    const lengths = new Set(axes.map(([, values]) => values.length));
    if (lengths.size > 1) {
      throw new Error(
        `zip needs lists of one length, got ${
          axes.map(([path, values]) => `${path}: ${values.length}`).join(", ")
        }`,
      );
    }
    combos = axes[0][1].map((_, i) =>
      Object.fromEntries(axes.map(([p, values]) => [p, values[i]]))
    );
  } else {
    combos = axes.reduce<Record<string, unknown>[]>(
      (acc, [path, values]) => acc.flatMap((combo) => values.map((v) => ({ ...combo, [path]: v }))),
      [{}],
    );
  }
  return combos.flatMap((overrides) => seeds.map((seed) => ({ overrides, seed })))
    .map((point, index) => ({ index, ...point }));
}

/** The `--set` strings of a point, values as JSON: `["schedule.timesteps=100"]`. */
export function pointSets(point: SweepPoint): string[] {
  return Object.entries(point.overrides).map(([path, value]) => `${path}=${JSON.stringify(value)}`);
}

/** A point in one line: `schedule.timesteps=100 seed=0`. */
export function describePoint(point: SweepPoint): string {
  return [...pointSets(point), `seed=${point.seed}`].join(" ");
}

/** Indices as Slurm writes array ranges: `[0, 1, 2, 5]` -> `0-2,5`. */
export function compressIndices(indices: readonly number[]): string {
  const sorted = [...new Set(indices)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length;) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j++;
    parts.push(i === j ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(",");
}
