/**
 * The measured table of a conditional run (`guidance.md`, `guidance.json`): for each guidance
 * weight w, the numbers a scorer gives its samples, e.g. the attribute judge's accuracy per
 * conditioned attribute (`accuracy/<attribute>`) and KID against the dataset (`kid`).
 * @module
 */
import { join } from "node:path";
import type { ConditionalScorer } from "../eval/conditional.ts";
import { writeFileAtomic } from "../io/files.ts";

/** One row: a guidance weight and its numbers by metric name. */
export interface GuidanceRow {
  /** The guidance weight w. */
  w: number;
  /** Metric name -> value. */
  metrics: Record<string, number>;
}

function format(value: number | undefined): string {
  if (value === undefined || Number.isNaN(value)) return "";
  return Math.abs(value) >= 0.001 || value === 0 ? value.toFixed(3) : value.toExponential(2);
}

/**
 * A markdown table, one row per w and one column per metric (in order of first appearance),
 * three decimals; a metric a row lacks is left blank.
 */
export function guidanceTableMarkdown(rows: readonly GuidanceRow[]): string {
  const names: string[] = [];
  for (const row of rows) {
    for (const name of Object.keys(row.metrics)) if (!names.includes(name)) names.push(name);
  }
  const header = `| w | ${names.join(" | ")} |`;
  const rule = `| --- | ${names.map(() => "---").join(" | ")} |`;
  const body = rows.map((row) =>
    `| ${row.w} | ${names.map((n) => format(row.metrics[n])).join(" | ")} |`
  );
  return [header, rule, ...body].join("\n") + "\n";
}

/** Writes `guidance.md` and `guidance.json` into the run folder `dir`. */
export async function writeGuidanceTable(
  dir: string,
  rows: readonly GuidanceRow[],
): Promise<void> {
  await writeFileAtomic(join(dir, "guidance.md"), guidanceTableMarkdown(rows));
  await writeFileAtomic(
    join(dir, "guidance.json"),
    JSON.stringify(rows.map((r) => ({ w: r.w, ...r.metrics })), null, 1) + "\n",
  );
}
