/**
 * The measures of one run (pure): KID with its spread, FID and its floor, diversity, the final
 * loss with its standard error, training time with the error of its step rate, sampling time,
 * peak memory; and grouping of runs by their swept values.
 * @module
 */
import type { AnswerRun, EvalLine } from "./collect.ts";
import { meanWithError, type Measure, single } from "./measure.ts";

/** The summary key of a metric family (`kid_iv3m5`, or `kid` with another feature network). */
export function metricKey(
  summary: Record<string, unknown>,
  family: "kid" | "fid" | "diversity",
): string | null {
  const pattern = new RegExp(`^${family}(_[a-z0-9]+)?$`);
  return Object.keys(summary).find((k) => pattern.test(k) && !k.endsWith("_std")) ?? null;
}

/** A number of the summary, or null. */
export function summaryNumber(run: AnswerRun, key: string | null): number | null {
  if (key === null) return null;
  const v = run.summary[key];
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

/** The final evaluation (the last eval.jsonl line marked final, else the last one). */
export function finalEval(run: AnswerRun): EvalLine | null {
  return run.evals.findLast((e) => e.final) ?? run.evals.at(-1) ?? null;
}

/** KID of the final evaluation, with its spread over subsets as its error. */
export function kidOf(run: AnswerRun): Measure | null {
  const key = metricKey(run.summary, "kid");
  const value = summaryNumber(run, key);
  if (value === null) return null;
  const std = finalEval(run)?.metrics[`${key}_std`];
  return single(value, typeof std === "number" ? std : null);
}

/** FID of the final evaluation (no error bar: one estimate). */
export function fidOf(run: AnswerRun): Measure | null {
  const value = summaryNumber(run, metricKey(run.summary, "fid"));
  return value === null ? null : single(value);
}

/** FID between two sets of real images of the same size: what "good" is on this data. */
export function floorFidOf(run: AnswerRun): Measure | null {
  const key = metricKey(run.summary, "fid");
  const value = key === null ? null : summaryNumber(run, `floor_${key}`);
  return value === null ? null : single(value);
}

/** KID between two sets of real images (its floor). */
export function floorKidOf(run: AnswerRun): Measure | null {
  const key = metricKey(run.summary, "kid");
  const value = key === null ? null : summaryNumber(run, `floor_${key}`);
  return value === null ? null : single(value);
}

/** Diversity of the samples, and of the reference images. */
export function diversityOf(run: AnswerRun): { samples: Measure; real: Measure | null } | null {
  const key = metricKey(run.summary, "diversity");
  const value = summaryNumber(run, key);
  if (value === null) return null;
  const real = summaryNumber(run, `${key}_real`);
  return { samples: single(value), real: real === null ? null : single(real) };
}

/** The loss as the runs report it: the mean of the last 50 steps, with its standard error. */
export function finalLossOf(run: AnswerRun): Measure | null {
  if (run.losses.length > 0) return meanWithError(run.losses.slice(-50).map((l) => l.loss));
  const v = summaryNumber(run, "lossMean50");
  return v === null ? null : single(v);
}

/**
 * Training wall time. Its error comes from the step rate: the s/step of each logged interval of
 * timings.jsonl varies, and the standard error of their mean, times the steps, is the error of
 * the total. None for a run that reused another's training (its timings are that run's).
 */
export function trainTimeOf(run: AnswerRun): Measure | null {
  const total = summaryNumber(run, "trainSeconds");
  if (total === null) return null;
  if (run.reused) return single(total);
  const rates: number[] = [];
  for (let i = 1; i < run.timings.length; i++) {
    const steps = run.timings[i].step - run.timings[i - 1].step;
    if (steps > 0) rates.push((run.timings[i].seconds - run.timings[i - 1].seconds) / steps);
  }
  const rate = rates.length >= 3 ? meanWithError(rates) : null;
  const steps = summaryNumber(run, "steps");
  if (!rate || rate.error === null || steps === null) return single(total);
  return single(total, rate.error * steps);
}

/** Wall time of sampling the run's samples.png (one measurement). */
export function sampleTimeOf(run: AnswerRun): Measure | null {
  const v = summaryNumber(run, "sampleSeconds");
  return v === null ? null : single(v);
}

/** Peak resident memory of the process up to the end of training, MiB (one measurement). */
export function trainMemoryOf(run: AnswerRun): Measure | null {
  const v = summaryNumber(run, "trainPeakRssMiB");
  return v === null ? null : single(v);
}

/** Runs that completed. */
export function complete(runs: readonly AnswerRun[]): AnswerRun[] {
  return runs.filter((r) => r.status === "complete");
}

/** Runs grouped by `key` (in order of first appearance), e.g. by their swept values. */
export function groupBy<K>(runs: readonly AnswerRun[], key: (run: AnswerRun) => K): {
  key: K;
  runs: AnswerRun[];
}[] {
  const groups: { key: K; id: string; runs: AnswerRun[] }[] = [];
  for (const run of runs) {
    const k = key(run);
    const id = JSON.stringify(k);
    const group = groups.find((g) => g.id === id);
    if (group) group.runs.push(run);
    else groups.push({ key: k, id, runs: [run] });
  }
  return groups.map(({ key, runs }) => ({ key, runs }));
}

/** The seeds of some runs, as a table cell: `0, 1, 2`. */
export function seedList(runs: readonly AnswerRun[]): string {
  return runs.map((r) => r.seed).join(", ");
}

/**
 * The mean loss of each epoch (metrics.jsonl's `epoch` is 0-based; the result's `epoch` is
 * 1-based, as eval.jsonl counts), with its standard error over the epoch's steps.
 */
export function lossPerEpoch(run: AnswerRun): { epoch: number; loss: Measure }[] {
  const byEpoch = new Map<number, number[]>();
  for (const l of run.losses) {
    const list = byEpoch.get(l.epoch) ?? [];
    list.push(l.loss);
    byEpoch.set(l.epoch, list);
  }
  return [...byEpoch].sort(([a], [b]) => a - b).flatMap(([epoch, losses]) => {
    const loss = meanWithError(losses);
    return loss ? [{ epoch: epoch + 1, loss }] : [];
  });
}
