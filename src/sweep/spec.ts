/**
 * A sweep as declared by an experiment file: its `sweep` map (from the file or the nearest
 * `extends` ancestor that has one), its `launcher` section (merged along the chain, the file
 * winning) and every point resolved into an ordinary experiment.
 * @module
 */
import type { z } from "zod";
import {
  LauncherSchema,
  type SlurmConfig,
  SlurmSchema,
  type SweepConfig,
  SweepSchema,
} from "../../schemas/experiment.ts";
import { type LoadedExperiment, loadExperiment } from "../config/mod.ts";
import { parseJsonc } from "../config/json.ts";
import { isJsonObject, mergeLayers } from "../config/merge.ts";
import { UserError } from "../errors.ts";
import { describePoint, expandSweep, pointSets, sweepAxes, type SweepPoint } from "./points.ts";

/** A point with its resolved experiment. */
export interface ResolvedPoint extends SweepPoint {
  /** The point's `--set` strings (its overrides; the sweep's own `--set`s come first). */
  sets: string[];
  /** The experiment of this point, as `deno task run <file> --sweep-index <index>` loads it. */
  loaded: LoadedExperiment;
}

/** A sweep ready to run. */
export interface Sweep {
  /** The absolute path of the experiment file. */
  file: string;
  /** The experiment name (shared by every point: `name` cannot be swept). */
  name: string;
  /** The sweep map, defaults applied. */
  spec: SweepConfig;
  /** The `--set` overrides given to the sweep command, applied to every point first. */
  sets: string[];
  /** `launcher.slurm`, defaults applied (empty when the file has none). */
  slurm: SlurmConfig;
  /** Every point, in index order. */
  points: ResolvedPoint[];
}

/** Paths a sweep may not vary: the run's identity and the file's own structure. */
const FIXED_PATHS = ["name", "seed", "$schema", "extends", "sweep", "launcher"];

async function readObject(file: string): Promise<Record<string, unknown>> {
  const data = parseJsonc(await Deno.readTextFile(file), file).value;
  return isJsonObject(data) ? data : {};
}

/** `value` parsed by `schema`, or a {@linkcode UserError} naming the file and the first issue. */
function validated<T>(
  schema: z.ZodType<T>,
  value: unknown,
  where: { file: string; path: string },
): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const path = [where.path, ...issue.path.map(String)].join(".");
  throw new UserError(issue.message, { file: where.file, path });
}

function overlaps(a: string, b: string): boolean {
  return a === b || a.startsWith(`${b}.`) || b.startsWith(`${a}.`);
}

/**
 * Loads the sweep of experiment file `path` and resolves every point (the file, then
 * `options.sets`, then the point's overrides and seed), validating all of them before anything
 * runs. Throws a {@linkcode UserError} naming the file, `sweep` and the point for a file without
 * a sweep, a path that cannot be swept or clashes with a `--set`, zip lists of different lengths,
 * or a point whose config is invalid.
 */
export async function loadSweep(path: string, options: { sets?: string[] } = {}): Promise<Sweep> {
  const sets = options.sets ?? [];
  const base = await loadExperiment(path, { sets });
  const { file } = base;
  let raw: unknown;
  let launcher: unknown = {};
  let sweepFile: string | undefined;
  // chain: the file first, then its ancestors; the launcher merges root first.
  for (const member of base.chain) {
    const data = await readObject(member);
    if (raw === undefined && data.sweep !== undefined) {
      raw = data.sweep;
      sweepFile = member;
    }
    if (data.launcher !== undefined) {
      validated(LauncherSchema, data.launcher, { file: member, path: "launcher" });
      launcher = mergeLayers(data.launcher, launcher);
    }
  }
  if (raw === undefined) {
    throw new UserError("this experiment declares no sweep", {
      file,
      path: "sweep",
      expected: 'a "sweep" map of paths to values, e.g. {"schedule.timesteps": [100, 200]}',
    });
  }
  const spec = validated(SweepSchema, raw, { file: sweepFile!, path: "sweep" });
  const axes = sweepAxes(spec);
  if (axes.length === 0 && (spec.seeds ?? []).length === 0) {
    throw new UserError("nothing to sweep", {
      file,
      path: "sweep",
      expected: "at least one path with values, or seeds",
    });
  }
  for (const [axis] of axes) {
    const fixed = FIXED_PATHS.find((p) => overlaps(axis, p));
    if (fixed !== undefined) {
      throw new UserError(`'${axis}' cannot be swept`, {
        file,
        path: `sweep.${axis}`,
        expected: fixed === "seed" ? "sweep.seeds: [0, 1, ...] to repeat points" : "a config field",
      });
    }
    const clash = sets.find((s) => overlaps(s.slice(0, s.indexOf("=")).trim(), axis));
    if (clash !== undefined) {
      throw new UserError(`--set ${clash} changes a swept path`, {
        file,
        path: `sweep.${axis}`,
        expected: "--set on paths the sweep does not vary",
      });
    }
  }
  let expanded: SweepPoint[];
  try {
    expanded = expandSweep(spec, { seed: base.config.seed });
  } catch (err) {
    throw new UserError(err instanceof Error ? err.message : String(err), {
      file,
      path: "sweep",
    });
  }
  const points: ResolvedPoint[] = [];
  for (const point of expanded) {
    const own = pointSets(point);
    try {
      const loaded = await loadExperiment(file, { sets: [...sets, ...own], seed: point.seed });
      points.push({ ...point, sets: own, loaded });
    } catch (err) {
      if (!(err instanceof UserError)) throw err;
      throw new UserError(`point ${point.index} (${describePoint(point)}): ${err.message}`, {
        file,
        path: "sweep",
      });
    }
  }
  return {
    file,
    name: base.config.name,
    spec,
    sets,
    slurm: validated(SlurmSchema, isJsonObject(launcher) ? launcher.slurm ?? {} : {}, {
      file,
      path: "launcher.slurm",
    }),
    points,
  };
}

/**
 * The experiment of point `index` of the sweep in `path` (`deno task run <file> --sweep-index`).
 * Throws a {@linkcode UserError} when the index is out of range.
 */
export async function loadSweepPoint(
  path: string,
  options: { index: number; sets?: string[] },
): Promise<LoadedExperiment> {
  const sweep = await loadSweep(path, { sets: options.sets });
  const point = sweep.points[options.index];
  if (!Number.isInteger(options.index) || point === undefined) {
    throw new UserError(
      `--sweep-index ${options.index}: the sweep has ${sweep.points.length} points`,
      { file: sweep.file, path: "sweep", expected: `0 to ${sweep.points.length - 1}` },
    );
  }
  return point.loaded;
}
