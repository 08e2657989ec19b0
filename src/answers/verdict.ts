/**
 * Claims checked against numbers (pure): each check compares two measures in the direction a
 * claim expects, gives a row of the differences table and a clause of the generated sentence.
 * @module
 */
import {
  describeDifference,
  difference,
  type Expectation,
  type Finding,
  finding,
  formatMeasure,
  formatNumber,
  type Measure,
  UNCERTAIN_FRACTION,
  Z,
} from "./measure.ts";
import type { Table } from "./section.ts";

/** One comparison a claim implies: `b` against `a`, expected to go `expect`. */
export interface Check {
  /** What is compared, e.g. `sampling time`. */
  what: string;
  /** Label of `a`, e.g. `T = 100`. */
  aLabel: string;
  /** Label of `b`. */
  bLabel: string;
  /** The baseline. */
  a: Measure;
  /** The other. */
  b: Measure;
  /** The direction the claim expects b − a to go. */
  expect: Expectation;
  /** Unit of both. */
  unit?: string;
  /** Say the change as a ratio (×4.9) instead of a difference. */
  ratio?: boolean;
}

/** A check and what came of it. */
export interface Judged extends Check {
  /** holds, contradicted or not shown. */
  finding: Finding;
  /** The difference in words. */
  detail: string;
}

/** Judges every check. */
export function judge(checks: readonly (Check | null)[]): Judged[] {
  return checks.filter((c): c is Check => c !== null).map((c) => ({
    ...c,
    finding: finding(difference(c.a, c.b), c.expect),
    detail: describeDifference(c.a, c.b, { unit: c.unit, ratio: c.ratio }),
  }));
}

/** `a`, `a and b`, `a, b and c`. */
export function listWords(items: readonly string[]): string {
  if (items.length <= 1) return items.join("");
  return `${items.slice(0, -1).join(", ")} and ${items.at(-1)}`;
}

const EXPECTED: Record<Expectation, string> = {
  increase: "expected to rise",
  decrease: "expected to fall",
  same: "expected the same",
};

/** The differences table of some judged checks: which are larger than their error. */
export function differencesTable(judged: readonly Judged[], title?: string): Table {
  return {
    ...(title ? { title } : {}),
    head: ["quantity", "from", "to", "difference", `${Z}× error`, "larger than error?", "claim"],
    rows: judged.map((j) => {
      const d = difference(j.a, j.b);
      const u = j.unit ? ` ${j.unit}` : "";
      return [
        j.what,
        `${j.aLabel}: ${formatMeasure(j.a, j.unit)}`,
        `${j.bLabel}: ${formatMeasure(j.b, j.unit)}`,
        `${d.delta >= 0 ? "+" : "−"}${formatNumber(Math.abs(d.delta))}${u}` +
        (d.ratio !== null ? ` (×${formatNumber(d.ratio)})` : ""),
        d.error === null ? "no error bar" : `${formatNumber(Z * d.error)}${u}`,
        d.measured
          ? (d.significant ? "yes" : "no")
          : `${d.significant ? "yes" : "no"} (> ${UNCERTAIN_FRACTION * 100}% rule)`,
        `${EXPECTED[j.expect]}: ${j.finding}`,
      ];
    }),
    note: `± is the spread (over seeds where there are several, else the run's own); a ` +
      `difference counts when it is more than ${Z} times √(e₁² + e₂²) of the errors of the ` +
      "values (spread/√n over seeds); a value without an error bar counts as changed only when " +
      `it differs by more than ${UNCERTAIN_FRACTION * 100}%.`,
  };
}

/**
 * The sentence's second half: `At this budget the claim holds in part: it holds for A and B; it
 * is not shown for C (no difference larger than its error); it goes the other way for D.`
 */
export function summarise(judged: readonly Judged[]): string {
  const by = (f: Finding) => judged.filter((j) => j.finding === f).map((j) => j.what);
  const holds = by("holds");
  const notShown = by("not shown");
  const contradicted = by("contradicted");
  if (judged.length === 0) return "Nothing to judge yet.";
  if (holds.length === judged.length) {
    return `The claim holds at this budget (${listWords(holds)}).`;
  }
  const parts: string[] = [];
  if (holds.length > 0) parts.push(`it holds for ${listWords(holds)}`);
  if (notShown.length > 0) {
    parts.push(`it is not shown for ${listWords(notShown)} (no difference larger than its error)`);
  }
  if (contradicted.length > 0) {
    parts.push(`it goes the other way for ${listWords(contradicted)}`);
  }
  const overall = holds.length === 0 ? "does not hold" : "holds in part";
  return `At this budget the claim ${overall}: ${parts.join("; ")}.`;
}

/** Each judged check as `what: detail`, joined with semicolons. */
export function details(judged: readonly Judged[]): string {
  return judged.map((j) => `${j.what}: ${j.detail}`).join("; ");
}
