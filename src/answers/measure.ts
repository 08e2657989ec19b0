/**
 * The arithmetic of the answers (pure): a measured number with its error, its mean over seeds,
 * the difference of two and whether it is larger than its error, and how each prints.
 *
 * A {@link Measure} is a value, the error of that value (null when nothing measured one) and the
 * runs it stands for. One run brings its own error where the run folder has one (KID's spread
 * over subsets, the standard error of a mean over steps or images). Over n ≥ 2 seeds the value
 * is the mean, `spread` the sample standard deviation and the error the standard error
 * spread / √n. A difference "is larger than its error" when |Δ| > {@link Z} · √(e₁² + e₂²).
 * @module
 */

/** How many combined errors a difference must exceed to count (about 95% for Gaussian errors). */
export const Z = 2;

/**
 * A measurement without an error bar counts as changed only when it differs by more than this
 * fraction (timings and memory measured once: run-to-run noise on a shared machine is about
 * that large).
 */
export const UNCERTAIN_FRACTION = 0.05;

/** A measured number. */
export interface Measure {
  /** The value (the mean over seeds when n ≥ 2). */
  value: number;
  /** The error of `value`: the run's own, or spread / √n over seeds; null when unknown. */
  error: number | null;
  /** The sample standard deviation over seeds (n ≥ 2), else the run's own error or null. */
  spread: number | null;
  /** Runs (seeds) it stands for. */
  n: number;
}

/** One run's number with its own error (or none). */
export function single(value: number, error: number | null = null): Measure {
  return { value, error, spread: error, n: 1 };
}

/**
 * The measure of values over seeds (non-finite ones left out): one value keeps its own error,
 * two or more give their mean with the sample std and the standard error. Null when empty.
 */
export function overSeeds(values: readonly (Measure | null | undefined)[]): Measure | null {
  const ok = values.filter((m): m is Measure => m !== null && m !== undefined)
    .filter((m) => Number.isFinite(m.value));
  if (ok.length === 0) return null;
  if (ok.length === 1) return ok[0];
  const n = ok.length;
  const mean = ok.reduce((a, m) => a + m.value, 0) / n;
  const spread = Math.sqrt(ok.reduce((a, m) => a + (m.value - mean) ** 2, 0) / (n - 1));
  return { value: mean, error: spread / Math.sqrt(n), spread, n };
}

/** The mean of `values` with its standard error (sample std / √n); null when empty. */
export function meanWithError(values: readonly number[]): Measure | null {
  const ok = values.filter(Number.isFinite);
  if (ok.length === 0) return null;
  const n = ok.length;
  const mean = ok.reduce((a, v) => a + v, 0) / n;
  if (n === 1) return single(mean);
  const std = Math.sqrt(ok.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1));
  return single(mean, std / Math.sqrt(n));
}

/** A difference b − a of two measures. */
export interface Difference {
  /** b − a. */
  delta: number;
  /** b / a (null when a is 0). */
  ratio: number | null;
  /** √(e_a² + e_b²), null when either error is unknown. */
  error: number | null;
  /**
   * Whether |Δ| > Z · error; without an error, whether b differs from a by more than
   * {@link UNCERTAIN_FRACTION} of |a| (`measured` then says false).
   */
  significant: boolean;
  /** Whether `significant` rests on errors (true) or on the fraction rule (false). */
  measured: boolean;
}

/** b − a, and whether it is larger than its error. */
export function difference(a: Measure, b: Measure): Difference {
  const delta = b.value - a.value;
  const ratio = a.value === 0 ? null : b.value / a.value;
  const error = a.error !== null && b.error !== null ? Math.hypot(a.error, b.error) : null;
  if (error !== null) {
    return { delta, ratio, error, significant: Math.abs(delta) > Z * error, measured: true };
  }
  const significant = Math.abs(delta) > UNCERTAIN_FRACTION * Math.abs(a.value);
  return { delta, ratio, error, significant, measured: false };
}

/** Which way a difference goes, as a claim expects it. */
export type Expectation = "increase" | "decrease" | "same";

/** What a difference says about a claim: it holds, it goes the other way, or it is not shown. */
export type Finding = "holds" | "contradicted" | "not shown";

/**
 * The finding of difference `d` for a claim that expects `expect`: an increase or decrease holds
 * when significant in that direction and is contradicted when significant the other way; "same"
 * holds when the difference is not significant and is contradicted when it is.
 */
export function finding(d: Difference, expect: Expectation): Finding {
  if (expect === "same") return d.significant ? "contradicted" : "holds";
  if (!d.significant) return "not shown";
  return (d.delta > 0) === (expect === "increase") ? "holds" : "contradicted";
}

/** Decimals that show `x` to `digits` significant digits. */
function decimalsFor(x: number, digits: number): number {
  if (x === 0 || !Number.isFinite(x)) return 0;
  return Math.max(0, Math.min(8, digits - 1 - Math.floor(Math.log10(Math.abs(x)))));
}

/**
 * A number to 3 significant digits (integers of 4 or more digits whole, very small or large
 * ones in exponent form), or "–" when missing.
 */
export function formatNumber(x: number | null | undefined, digits = 3): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return "–";
  if (x !== 0 && (Math.abs(x) < 1e-4 || Math.abs(x) >= 1e6)) return x.toExponential(digits - 1);
  if (Math.abs(x) >= 10 ** (digits - 1)) return Math.round(x).toLocaleString("en-US");
  return x.toFixed(decimalsFor(x, digits));
}

/**
 * A measure as a table shows it: `value ± spread` with the value rounded to the spread's second
 * significant digit, `value` alone without a spread; "–" for none. `unit` follows the number.
 */
export function formatMeasure(m: Measure | null | undefined, unit = ""): string {
  if (!m) return "–";
  const u = unit ? ` ${unit}` : "";
  if (m.spread === null || !Number.isFinite(m.spread) || m.spread === 0) {
    return `${formatNumber(m.value)}${u}`;
  }
  if (Math.abs(m.value) < 1e-4 && m.value !== 0 || Math.abs(m.value) >= 1e6) {
    return `${m.value.toExponential(2)} ± ${m.spread.toExponential(1)}${u}`;
  }
  const decimals = Math.max(decimalsFor(m.spread, 2), 0);
  return `${m.value.toFixed(decimals)} ± ${m.spread.toFixed(decimals)}${u}`;
}

/**
 * A difference in words for the sentences: `0.012 → 0.031 (+0.019, larger than its error
 * 0.004)`, or, without errors, `×4.9 (one measurement each)`.
 */
export function describeDifference(
  a: Measure,
  b: Measure,
  options: { unit?: string; ratio?: boolean } = {},
): string {
  const d = difference(a, b);
  const u = options.unit ? ` ${options.unit}` : "";
  const sign = d.delta >= 0 ? "+" : "−";
  const change = options.ratio && d.ratio !== null
    ? `×${formatNumber(d.ratio)}`
    : `${sign}${formatNumber(Math.abs(d.delta))}${u}`;
  const from = `${formatNumber(a.value)} → ${formatNumber(b.value)}${u}`;
  if (!d.measured) {
    return `${from} (${change}; one measurement each, no error bar` +
      `${d.significant ? "" : `, within ${UNCERTAIN_FRACTION * 100}%`})`;
  }
  const than = d.significant ? "larger than" : "within";
  return `${from} (${change}, ${than} ${Z}× its error ${formatNumber(d.error)}${u})`;
}
