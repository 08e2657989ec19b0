/**
 * Pure comparisons for a report: the config paths in which runs differ, a short label per run
 * from those differences, the summary metrics worth a column (with their ± std partner), the
 * mean and spread of each metric over a sweep's seeds, and the loss curve smoothed and thinned
 * for a chart.
 * @module
 */

/** Every leaf of a JSON value by dotted path; arrays are leaves (compared whole). */
export function flattenJson(value: unknown, prefix = ""): Map<string, unknown> {
  const out = new Map<string, unknown>();
  if (typeof value === "object" && value !== null && !Array.isArray(value)) {
    for (const [key, child] of Object.entries(value)) {
      for (const [path, leaf] of flattenJson(child, prefix ? `${prefix}.${key}` : key)) {
        out.set(path, leaf);
      }
    }
  } else if (prefix !== "") out.set(prefix, value);
  return out;
}

/** The paths (sorted) whose values are not the same in every config (missing counts as a value). */
export function differingPaths(configs: readonly unknown[]): string[] {
  const flat = configs.map((c) => flattenJson(c));
  const paths = new Set(flat.flatMap((f) => [...f.keys()]));
  return [...paths].filter((path) => {
    const values = new Set(flat.map((f) => JSON.stringify(f.get(path))));
    return values.size > 1;
  }).sort();
}

/** A value as a report prints it: strings bare, everything else as JSON, missing as "-". */
export function formatValue(value: unknown): string {
  if (value === undefined) return "-";
  return typeof value === "string" ? value : JSON.stringify(value);
}

/**
 * A label per run naming what sets it apart: the differing paths (but `description`) as
 * `path=value`, shortened to their last key when that stays unambiguous; `fallback` when none
 * differ or more than `max` do.
 */
export function runLabels(
  configs: readonly unknown[],
  options: { fallback: (i: number) => string; max?: number },
): string[] {
  const paths = differingPaths(configs).filter((p) => p !== "description");
  if (paths.length === 0 || paths.length > (options.max ?? 3)) {
    return configs.map((_, i) => options.fallback(i));
  }
  const last = paths.map((p) => p.split(".").at(-1)!);
  const names = new Set(last).size === last.length ? last : paths;
  const flat = configs.map((c) => flattenJson(c));
  return flat.map((f) => paths.map((p, j) => `${names[j]}=${formatValue(f.get(p))}`).join(" "));
}

/** A metric column: the summary key, and the key of its standard deviation when there is one. */
export interface MetricColumn {
  /** Summary key of the value. */
  key: string;
  /** Summary key of its ± (e.g. `kid_iv3m5Std`, `kid_iv3m5_std`). */
  std?: string;
}

const STD = /(_std|Std|_stdev|_sd)$/;

/**
 * The numeric summary keys of the given summaries, each with its `<key>Std` / `<key>_std`
 * partner folded in; `only` keeps the keys it matches.
 */
export function metricColumns(
  summaries: readonly Record<string, unknown>[],
  options: { only?: RegExp } = {},
): MetricColumn[] {
  const keys: string[] = [];
  for (const summary of summaries) {
    for (const [key, value] of Object.entries(summary)) {
      if (typeof value === "number" && !keys.includes(key)) keys.push(key);
    }
  }
  return keys.filter((k) => !STD.test(k) && (!options.only || options.only.test(k))).map((key) => {
    const std = keys.find((k) => STD.test(k) && k.replace(STD, "") === key);
    return std ? { key, std } : { key };
  });
}

/** A number with 4 significant digits (integers whole), or "-" when missing. */
export function formatNumber(value: unknown): string {
  if (typeof value !== "number" || !Number.isFinite(value)) return "-";
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  return Math.abs(value) >= 1e4 || Math.abs(value) < 1e-3
    ? value.toExponential(3)
    : value.toPrecision(4);
}

/**
 * The loss curve as a chart draws it: the mean of the last `window` steps at each step (the
 * raw loss of single steps is noise), thinned to at most `points` points.
 */
export function smoothLoss(
  losses: readonly { step: number; loss: number }[],
  options: { window: number; points: number },
): { step: number; loss: number }[] {
  const out: { step: number; loss: number }[] = [];
  let sum = 0;
  const every = Math.max(1, Math.ceil(losses.length / options.points));
  for (let i = 0; i < losses.length; i++) {
    sum += losses[i].loss;
    if (i >= options.window) sum -= losses[i - options.window].loss;
    if ((i + 1) % every === 0 || i === losses.length - 1) {
      out.push({ step: losses[i].step, loss: sum / Math.min(i + 1, options.window) });
    }
  }
  return out;
}

/** One metric over the seeds of a sweep point: mean, sample standard deviation, how many runs. */
export interface SeedStat {
  /** Mean over the runs that recorded the metric. */
  mean: number;
  /** Sample standard deviation (n - 1 in the denominator); null with fewer than two values. */
  std: number | null;
  /** Runs that recorded the metric. */
  n: number;
}

/** The runs of one sweep point (same overrides, different seeds) and their metrics. */
export interface SeedGroup {
  /** The point's overrides (every swept path but the seed). */
  overrides: Record<string, unknown>;
  /** Seeds of the runs in the group, in sweep order. */
  seeds: number[];
  /** Each requested key's statistics; absent when no run of the group recorded it. */
  stats: Map<string, SeedStat>;
}

/**
 * Groups sweep points by their overrides (in order of first appearance) and gives each `keys`
 * metric's mean and sample std over the seeds: how much of a difference between two settings
 * is the seed's. Non-finite and missing values are left out of n.
 */
export function seedMeans(
  points: readonly {
    overrides: Record<string, unknown>;
    seed: number;
    summary: Record<string, unknown>;
  }[],
  keys: readonly string[],
): SeedGroup[] {
  const groups = new Map<
    string,
    { overrides: Record<string, unknown>; seeds: number[]; summaries: Record<string, unknown>[] }
  >();
  for (const point of points) {
    const id = JSON.stringify(Object.entries(point.overrides).sort(([a], [b]) => a < b ? -1 : 1));
    const group = groups.get(id) ?? { overrides: point.overrides, seeds: [], summaries: [] };
    group.seeds.push(point.seed);
    group.summaries.push(point.summary);
    groups.set(id, group);
  }
  return [...groups.values()].map(({ overrides, seeds, summaries }) => {
    const stats = new Map<string, SeedStat>();
    for (const key of keys) {
      const values = summaries.map((s) => s[key]).filter((v): v is number =>
        typeof v === "number" && Number.isFinite(v)
      );
      if (values.length === 0) continue;
      const mean = values.reduce((a, b) => a + b, 0) / values.length;
      const std = values.length < 2
        ? null
        : Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (values.length - 1));
      stats.set(key, { mean, std, n: values.length });
    }
    return { overrides, seeds, stats };
  });
}
