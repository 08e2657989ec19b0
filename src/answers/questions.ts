/**
 * The seeds' questions and how each answer is built from its sweep's run folders (pure: the
 * claim is the seed's, every number comes from the runs).
 * @module
 */
import type { AnswerRun, AnswerSweep } from "./collect.ts";
import {
  complete,
  diversityOf,
  fidOf,
  finalEval,
  finalLossOf,
  floorFidOf,
  floorKidOf,
  groupBy,
  kidOf,
  lossPerEpoch,
  metricKey,
  sampleTimeOf,
  seedList,
  summaryNumber,
  trainMemoryOf,
  trainTimeOf,
} from "./extract.ts";
import {
  difference,
  formatMeasure,
  formatNumber,
  type Measure,
  overSeeds,
  single,
  Z,
} from "./measure.ts";
import type { Chart, Picture, Question, Section, Table } from "./section.ts";
import { type Check, details, differencesTable, judge, listWords, summarise } from "./verdict.ts";

type Built = ReturnType<Question["build"]>;

/** The measure of `f` over a group's runs (mean over seeds). */
function over(runs: readonly AnswerRun[], f: (run: AnswerRun) => Measure | null): Measure | null {
  return overSeeds(runs.map(f));
}

/** FID with its floor in one cell: `12.3 (floor 0.25)`. */
function fidCell(runs: readonly AnswerRun[]): string {
  const fid = over(runs, fidOf);
  const floor = over(runs, floorFidOf);
  return `${formatMeasure(fid)}${floor ? ` (floor ${formatMeasure(floor)})` : ""}`;
}

/** KID with its floor in one cell. */
function kidCell(runs: readonly AnswerRun[]): string {
  const floor = over(runs, floorKidOf);
  return `${formatMeasure(over(runs, kidOf))}${
    floor ? ` (floor ${formatNumber(floor.value)})` : ""
  }`;
}

/** The check `what` between two groups, when both have the measure. */
function check(
  what: string,
  from: { label: string; runs: readonly AnswerRun[] },
  to: { label: string; runs: readonly AnswerRun[] },
  options: { f: (run: AnswerRun) => Measure | null } & Pick<Check, "expect" | "unit" | "ratio">,
): Check | null {
  const a = over(from.runs, options.f);
  const b = over(to.runs, options.f);
  if (!a || !b) return null;
  return {
    what,
    aLabel: from.label,
    bLabel: to.label,
    a,
    b,
    expect: options.expect,
    ...(options.unit ? { unit: options.unit } : {}),
    ...(options.ratio ? { ratio: true } : {}),
  };
}

/** A note on how many seeds stand behind each row. */
function seedsNote(groups: readonly { runs: AnswerRun[] }[]): string {
  const counts = [...new Set(groups.map((g) => g.runs.length))];
  if (counts.length === 1 && counts[0] === 1) {
    return "One seed per row (all this budget allowed): ± is the run's own error (KID: the " +
      "spread over subsets; final loss: the standard error of the mean of the last 50 steps; " +
      "training time: from the spread of its step rate).";
  }
  return `${listWords(counts.map(String))} seed(s) per row: values are means over the seeds, ` +
    "± their sample standard deviation.";
}

/** The samples.png of the first seed of each group, named by `name`. */
function samplePictures(
  groups: readonly { runs: AnswerRun[] }[],
  label: (run: AnswerRun) => { name: string; caption: string },
): Picture[] {
  return groups.flatMap((g) => {
    const run = g.runs[0];
    if (!run.images.includes("samples.png")) return [];
    const { name, caption } = label(run);
    return [{ dir: run.dir, file: "samples.png", name: `${name}.png`, caption }];
  });
}

const T_PATH = "schedule.timesteps";

/** The images of a run's samples.png (`sampler.count` of its config), or null. */
function sampleCount(run: AnswerRun | undefined): number | null {
  const count = (run?.config.sampler as { count?: unknown } | undefined)?.count;
  return typeof count === "number" ? count : null;
}

/** Question 1: the number of steps T. */
export const Q1: Question = {
  id: "q1-steps",
  title: "Question 1: the number of diffusion steps T",
  seeds: "000, 001",
  claim: "More steps T means longer training and sampling, more memory and better images; " +
    "fewer steps, the reverse.",
  build(sweep: AnswerSweep): Built {
    const groups = groupBy(complete(sweep.runs), (r) => Number(r.overrides[T_PATH]))
      .sort((a, b) => a.key - b.key);
    const rows = groups.map(({ key, runs }) => [
      String(key),
      seedList(runs),
      formatNumber(summaryNumber(runs[0], "sqrtAlphaBarT")),
      formatMeasure(over(runs, trainTimeOf), "s"),
      formatMeasure(over(runs, sampleTimeOf), "s"),
      formatMeasure(over(runs, trainMemoryOf), "MiB"),
      formatMeasure(over(runs, finalLossOf)),
      kidCell(runs),
      fidCell(runs),
    ]);
    const table: Table = {
      head: [
        "T",
        "seeds",
        "√ᾱ_T",
        "training time",
        "sampling time",
        "peak memory (training)",
        "final loss",
        "KID",
        "FID",
      ],
      rows,
      note:
        `${seedsNote(groups)} Sampling time: the run's samples.png (${
          sampleCount(groups[0]?.runs[0]) ?? "?"
        } images, T network evaluations each); peak memory: the process's resident high-water ` +
        "mark up to the end of training; KID and FID: the final evaluation, against as many " +
        "training images, with the real-vs-real floor (two disjoint sets of training images).",
    };
    const first = groups[0];
    const last = groups.at(-1);
    if (!first || !last || first === last) {
      return { tables: [table], pictures: [], charts: [], verdict: NOT_ENOUGH, notes: [] };
    }
    const from = { label: `T = ${first.key}`, runs: first.runs };
    const to = { label: `T = ${last.key}`, runs: last.runs };
    const judged = judge([
      check("training time", from, to, { f: trainTimeOf, expect: "increase", unit: "s" }),
      check("sampling time", from, to, {
        f: sampleTimeOf,
        expect: "increase",
        unit: "s",
        ratio: true,
      }),
      check("peak memory", from, to, { f: trainMemoryOf, expect: "increase", unit: "MiB" }),
      check("KID", from, to, { f: kidOf, expect: "decrease" }),
      check("FID", from, to, { f: fidOf, expect: "decrease" }),
    ]);
    return {
      tables: [table, differencesTable(judged, `${from.label} against ${to.label}`)],
      pictures: samplePictures(groups, (run) => ({
        name: `t${run.overrides[T_PATH]}`,
        caption: `T = ${run.overrides[T_PATH]} (seed ${run.seed})`,
      })),
      charts: [],
      verdict: `From ${from.label} to ${to.label}: ${details(judged)}. ${summarise(judged)} ` +
        `(Lower KID and FID are better images.)`,
      notes: [],
    };
  },
};

const NOT_ENOUGH = "Not enough complete points to compare yet.";

const NOISE = "sampler.initialNoise";
const STEP_NOISE = "sampler.stepNoise";

/** Question 2: the two sources of randomness of the reverse process. */
export const Q2: Question = {
  id: "q2-noise",
  title: "Question 2: the initial noise x_T and the step noise z",
  seeds: "000, 001",
  claim: "With x_T fixed (0) the samples show no diversity; without the step noise z the " +
    "reverse process reconstructs the images poorly.",
  build(sweep: AnswerSweep): Built {
    const groups = groupBy(
      complete(sweep.runs),
      (r) => `${r.overrides[NOISE]}/${r.overrides[STEP_NOISE]}`,
    );
    const find = (noise: string, z: boolean) =>
      groups.find((g) => g.key === `${noise}/${z}`) ?? null;
    const label = (noise: unknown, z: unknown) =>
      `x_T ${noise === "zeros" ? "= 0" : "~ N(0, I)"}, z ${z ? "on" : "off"}`;
    const diversity = (run: AnswerRun) => diversityOf(run)?.samples ?? null;
    const realDiversity = (run: AnswerRun) => diversityOf(run)?.real ?? null;
    const table: Table = {
      head: ["x_T", "step noise z", "seeds", "KID", "FID", "diversity", "diversity of real images"],
      rows: groups.map(({ runs }) => [
        runs[0].overrides[NOISE] === "zeros" ? "0" : "N(0, I)",
        runs[0].overrides[STEP_NOISE] ? "on" : "off",
        seedList(runs),
        kidCell(runs),
        fidCell(runs),
        formatMeasure(over(runs, diversity)),
        formatMeasure(over(runs, realDiversity)),
      ]),
      note: `${seedsNote(groups)} Diversity: the mean distance between the features ` +
        "(InceptionV3 mixed5, as for KID) of two different samples, over all pairs; 0 when " +
        "every sample is the same. Beside it, the same for as many training images.",
    };
    const base = find("gaussian", true);
    const fixed = find("zeros", true);
    const noZ = find("gaussian", false);
    const neither = find("zeros", false);
    if (!base || (!fixed && !noZ)) {
      return { tables: [table], pictures: [], charts: [], verdict: NOT_ENOUGH, notes: [] };
    }
    const at = (g: typeof base) => ({
      label: label(g.runs[0].overrides[NOISE], g.runs[0].overrides[STEP_NOISE]),
      runs: g.runs,
    });
    const judged = judge([
      fixed
        ? check("diversity with x_T = 0", at(base), at(fixed), { f: diversity, expect: "decrease" })
        : null,
      noZ ? check("KID without z", at(base), at(noZ), { f: kidOf, expect: "increase" }) : null,
    ]);
    const sentences = [`${details(judged)}.`, summarise(judged)];
    const baseDiversity = over(base.runs, diversity);
    const fixedDiversity = fixed ? over(fixed.runs, diversity) : null;
    if (baseDiversity && fixedDiversity && baseDiversity.value > 0) {
      sentences.push(
        `With x_T = 0 and z on, the samples keep ${
          formatNumber(100 * fixedDiversity.value / baseDiversity.value)
        }% of the diversity of x_T ~ N(0, I).`,
      );
    }
    const neitherDiversity = neither ? over(neither.runs, diversity) : null;
    if (neitherDiversity) {
      sentences.push(
        neitherDiversity.value === 0
          ? "With both off, every sample is the same image (diversity 0)."
          : `With both off, the diversity is ${formatMeasure(neitherDiversity)}.`,
      );
    }
    return {
      tables: [table, differencesTable(judged, `against ${label("gaussian", true)}`)],
      pictures: samplePictures(groups, (run) => ({
        name: `xT-${run.overrides[NOISE]}-z-${run.overrides[STEP_NOISE] ? "on" : "off"}`,
        caption: `${label(run.overrides[NOISE], run.overrides[STEP_NOISE])} (seed ${run.seed})`,
      })),
      charts: [],
      verdict: sentences.join(" "),
      notes: [],
    };
  },
};

const VARIANCE = "sampler.variance";

/** The recovery rows of seed 002 as measures (mean over images, error spread / √n). */
function recoveryMeasure(
  stat: { mean: number; std: number; n: number } | null | undefined,
): Measure | null {
  if (!stat) return null;
  return { value: stat.mean, error: stat.std / Math.sqrt(stat.n), spread: stat.std, n: 1 };
}

/** Seed 002: σ² = β or β̃, and recovery from x_t. */
export const SEED002: Question = {
  id: "seed002-variance",
  title: "Seed 002: the reverse variance σ² = β or β̃, and recovering a noised face",
  seeds: "002",
  claim: "Sampling with σ_t² = β_t or with σ_t² = β̃_t gives images of the same quality; a face " +
    "noised to t and denoised is totally different from the original, even at t = 100.",
  build(sweep: AnswerSweep): Built {
    const groups = groupBy(complete(sweep.runs), (r) => String(r.overrides[VARIANCE]));
    const name = (v: string) => (v === "beta" ? "β" : "β̃");
    const table: Table = {
      head: ["σ²", "seeds", "KID", "FID"],
      rows: groups.map((
        { key, runs },
      ) => [name(key), seedList(runs), kidCell(runs), fidCell(runs)]),
      note: `${seedsNote(groups)} Both rows sample the same trained network.`,
    };
    const beta = groups.find((g) => g.key === "beta");
    const posterior = groups.find((g) => g.key === "posterior");
    const judged = beta && posterior
      ? judge([
        check("KID", { label: "σ² = β", runs: beta.runs }, {
          label: "σ² = β̃",
          runs: posterior.runs,
        }, {
          f: kidOf,
          expect: "same",
        }),
      ])
      : [];
    const tables: Table[] = [table];
    if (judged.length > 0) tables.push(differencesTable(judged, "σ² = β against σ² = β̃"));
    const sentences: string[] = [];
    if (judged.length > 0) {
      sentences.push(
        `KID: ${judged[0].detail}; the two variances ${
          judged[0].finding === "holds" ? "give images of the same quality" : "differ"
        } at this budget.`,
      );
    }
    const withRecovery = groups.flatMap((g) => g.runs).find((r) => r.recovery !== null);
    const pictures: Picture[] = samplePictures(groups, (run) => ({
      name: `sigma-${run.overrides[VARIANCE]}`,
      caption: `σ² = ${name(String(run.overrides[VARIANCE]))} (seed ${run.seed})`,
    }));
    if (withRecovery?.recovery) {
      const rec = withRecovery.recovery;
      tables.push({
        title: `Recovery: ${rec.count} training faces noised to t and denoised (RMS pixel ` +
          "difference, 0-1 scale; mean ± std over the faces)",
        head: [
          "t",
          "x_t from x_0",
          "recovered (β) from x_0",
          "recovered (β̃) from x_0",
          "recovered (β̃) from another face",
          "x_0 from another face",
        ],
        rows: rec.t.map((d) => [
          String(d.t),
          formatMeasure(recoveryMeasure(d.noisedToOriginal)),
          formatMeasure(recoveryMeasure(d.toOriginal.beta)),
          formatMeasure(recoveryMeasure(d.toOriginal.posterior)),
          formatMeasure(recoveryMeasure(d.toRandom?.posterior)),
          formatMeasure(recoveryMeasure(d.originalToRandom)),
        ]),
        note: "Another face: for each original, a training image drawn after the recovered ones " +
          "(recovery.json). A recovered face as far from its original as from another face has " +
          "lost it.",
      });
      const kept: number[] = [];
      const lost: number[] = [];
      for (const d of rec.t) {
        const own = recoveryMeasure(d.toOriginal.posterior);
        const other = recoveryMeasure(d.toRandom?.posterior);
        if (!own || !other) continue;
        const diff = difference(own, other);
        (diff.significant && diff.delta > 0 ? kept : lost).push(d.t);
      }
      if (kept.length > 0) {
        sentences.push(
          `Recovered from t = ${listWords(kept.map(String))}, the faces are closer to their ` +
            `originals than to other faces by more than ${Z}× the error: the claim that they are ` +
            `totally different does not hold there` +
            (lost.length > 0 ? `; from t = ${listWords(lost.map(String))} it holds.` : "."),
        );
      } else if (lost.length > 0) {
        sentences.push(
          `Recovered from every t (${listWords(lost.map(String))}), the faces are no closer to ` +
            "their originals than to other faces: the claim holds at this budget.",
        );
      }
      if (withRecovery.images.includes("recovery.png")) {
        pictures.push({
          dir: withRecovery.dir,
          file: "recovery.png",
          name: "recovery.png",
          caption: "for each t: x_0, x_t, recovered with σ² = β, with σ² = β̃",
        });
      }
    }
    return {
      tables,
      pictures,
      charts: [],
      verdict: sentences.length > 0 ? sentences.join(" ") : NOT_ENOUGH,
      notes: [],
    };
  },
};

/** Seed 003: quality after every epoch beside the loss. */
export const SEED003: Question = {
  id: "seed003-cosine",
  title: "Seed 003: the cosine schedule, quality after every epoch beside the loss",
  seeds: "003",
  claim: "The FID varies noticeably between epochs (the model is unstable), while the loss " +
    "plateaus early.",
  build(sweep: AnswerSweep): Built {
    const run = complete(sweep.runs)[0];
    if (!run) return { tables: [], pictures: [], charts: [], verdict: NOT_ENOUGH, notes: [] };
    const kid = metricKey(run.summary, "kid") ?? metricKey(finalEval(run)?.metrics ?? {}, "kid");
    const fid = metricKey(run.summary, "fid") ?? metricKey(finalEval(run)?.metrics ?? {}, "fid");
    const losses = new Map(lossPerEpoch(run).map((l) => [l.epoch, l.loss]));
    const epochs = [...run.evals].sort((a, b) => a.epoch - b.epoch).map((e) => ({
      epoch: e.epoch,
      final: e.final,
      loss: losses.get(e.epoch) ?? null,
      kid: kid && typeof e.metrics[kid] === "number"
        ? single(e.metrics[kid], e.metrics[`${kid}_std`] ?? null)
        : null,
      fid: fid && typeof e.metrics[fid] === "number" ? single(e.metrics[fid]) : null,
    }));
    const table: Table = {
      head: ["epoch", "loss (epoch mean)", "KID", "FID"],
      rows: epochs.map((e) => [
        `${e.epoch}${e.final ? " (final)" : ""}`,
        formatMeasure(e.loss),
        formatMeasure(e.kid),
        formatMeasure(e.fid),
      ]),
      note: "One seed (all this budget allowed). KID ± its spread over subsets; the loss ± the " +
        "standard error of its mean over the epoch's steps. Evaluations after each epoch sample " +
        "with tfjs, the final one through the run's sampling engine, each from its own noise.",
    };
    const charts: Chart[] = epochs.length > 0 ? [epochChart(epochs)] : [];
    const sentences: string[] = [];
    const rises = epochs.slice(1).flatMap((e, i) => {
      const before = epochs[i];
      if (!e.kid || !before.kid) return [];
      const d = difference(before.kid, e.kid);
      return d.significant && d.delta > 0 ? [`${before.epoch} → ${e.epoch}`] : [];
    });
    const scored = epochs.filter((e) => e.kid !== null).length;
    if (scored >= 2) {
      sentences.push(
        rises.length > 0
          ? `KID got worse by more than ${Z}× its error ${rises.length} time(s) between ` +
            `consecutive epochs (${listWords(rises)}): the quality does vary between epochs, ` +
            "the claim holds at this budget."
          : `KID never got worse by more than ${Z}× its error from one epoch to the next ` +
            `(${scored} evaluations): the claim of instability is not shown at this budget.`,
      );
      const best = epochs.reduce((
        a,
        e,
      ) => (e.kid && (!a.kid || e.kid.value < a.kid.value) ? e : a));
      const lastKid = epochs.at(-1)!.kid;
      if (best.kid && lastKid && best !== epochs.at(-1)) {
        const d = difference(best.kid, lastKid);
        sentences.push(
          `The best KID came after epoch ${best.epoch} (${formatMeasure(best.kid)}), the last ` +
            `is ${formatMeasure(lastKid)}${
              d.significant ? ", worse by more than its error" : ", within its error"
            }.`,
        );
      }
    }
    const lossList = epochs.map((e) => e.loss).filter((l): l is Measure => l !== null);
    if (lossList.length >= 3) {
      const firstLoss = lossList[0];
      const mid = lossList[Math.floor((lossList.length - 1) / 2)];
      const lastLoss = lossList.at(-1)!;
      const fall = firstLoss.value - lastLoss.value;
      if (fall > 0) {
        sentences.push(
          `The loss fell from ${formatNumber(firstLoss.value)} to ${
            formatNumber(lastLoss.value)
          }, ` +
            `${formatNumber(100 * (firstLoss.value - mid.value) / fall)}% of that by the middle ` +
            "epoch.",
        );
      }
    }
    return {
      tables: [table],
      pictures: run.images.includes("samples.png")
        ? [{
          dir: run.dir,
          file: "samples.png",
          name: "samples.png",
          caption: `samples after the last epoch (seed ${run.seed})`,
        }]
        : [],
      charts,
      verdict: sentences.length > 0 ? sentences.join(" ") : NOT_ENOUGH,
      notes: [],
    };
  },
};

/** Loss, KID (± its spread) and FID per epoch, stacked on one epoch axis. */
function epochChart(
  epochs: readonly {
    epoch: number;
    loss: Measure | null;
    kid: Measure | null;
    fid: Measure | null;
  }[],
): Chart {
  const values = epochs.flatMap((e) =>
    (
      [["loss", e.loss], ["KID", e.kid], ["FID", e.fid]] as [string, Measure | null][]
    ).flatMap(([metric, m]) =>
      m
        ? [{
          epoch: e.epoch,
          metric,
          value: m.value,
          low: m.value - (m.spread ?? 0),
          high: m.value + (m.spread ?? 0),
        }]
        : []
    )
  );
  return {
    name: "epochs.svg",
    caption: "loss, KID (± its spread over subsets) and FID after every epoch",
    spec: {
      data: { values },
      facet: {
        row: { field: "metric", type: "nominal", title: null, sort: ["loss", "KID", "FID"] },
      },
      spec: {
        width: 420,
        height: 110,
        layer: [
          {
            mark: { type: "rule" },
            encoding: {
              x: { field: "epoch", type: "quantitative", scale: { zero: false } },
              y: { field: "low", type: "quantitative", title: null },
              y2: { field: "high" },
            },
          },
          {
            mark: { type: "line", point: true },
            encoding: {
              x: {
                field: "epoch",
                type: "quantitative",
                title: "epoch",
                scale: { zero: false },
                axis: { tickMinStep: 1 },
              },
              y: { field: "value", type: "quantitative", scale: { zero: false }, title: null },
            },
          },
        ],
      },
      resolve: { scale: { y: "independent" } },
    },
  };
}

const ENCODING = "model.conditioning.encoding";

/** Binomial standard error of an accuracy p over n samples, smoothed ((k + 1) / (n + 2)). */
export function accuracyMeasure(p: number, n: number): Measure {
  const smoothed = (p * n + 1) / (n + 2);
  return single(p, Math.sqrt(smoothed * (1 - smoothed) / n));
}

/** Seed 004: one-hot or integer attributes, and guidance w. */
export const SEED004: Question = {
  id: "seed004-conditioning",
  title: "Seed 004: one-hot or integer attributes, and classifier-free guidance w",
  seeds: "004",
  claim: "Attributes given as one-hot vectors condition the model better than raw integers; " +
    "and (classifier-free guidance, its reference) a larger w follows the attributes more " +
    "closely at a cost in sample quality.",
  build(sweep: AnswerSweep): Built {
    const runs = complete(sweep.runs).filter((r) => r.guidance !== null);
    if (runs.length === 0) {
      return { tables: [], pictures: [], charts: [], verdict: NOT_ENOUGH, notes: [] };
    }
    const attributes = [
      ...new Set(
        runs.flatMap((r) => r.guidance!.flatMap((row) => Object.keys(row)))
          .filter((k) => k.startsWith("accuracy/")).map((k) => k.slice("accuracy/".length)),
      ),
    ];
    const kidKey = (row: Record<string, number>) => metricKey(row, "kid");
    const rowMeasures = (run: AnswerRun, row: Record<string, number>) => {
      const n = run.labelledImages ?? 0;
      const key = kidKey(row);
      return {
        accuracy: attributes.map((a) =>
          typeof row[`accuracy/${a}`] === "number" && n > 0
            ? accuracyMeasure(row[`accuracy/${a}`], n)
            : null
        ),
        kid: key ? single(row[key], row[`${key}_std`] ?? null) : null,
      };
    };
    const rows: string[][] = [];
    for (const run of runs) {
      for (const row of run.guidance!) {
        const m = rowMeasures(run, row);
        rows.push([
          String(run.overrides[ENCODING]),
          String(row.w),
          ...m.accuracy.map((a) => formatMeasure(a)),
          formatMeasure(m.kid),
        ]);
      }
    }
    const realRow = runs[0].guidance![0];
    rows.push([
      "real images",
      "–",
      ...attributes.map((a) => formatNumber(realRow[`real/${a}`])),
      "–",
    ]);
    const n = runs[0].labelledImages;
    const table: Table = {
      head: ["encoding", "w", ...attributes.map((a) => `${a} accuracy`), "KID"],
      rows,
      note: `One seed (all this budget allowed); ${n ?? "?"} samples per w. Accuracy: the ` +
        "fraction of samples in which the attribute judge (a CNN trained on the real images) " +
        "sees the requested value, ± its binomial standard error; the last row is the judge " +
        "on held-out real images, the ceiling. KID ± its spread over subsets.",
    };
    // mean accuracy over the attributes, with the error of that mean
    const meanAccuracy = (run: AnswerRun | undefined, w: number): Measure | null => {
      const row = run?.guidance?.find((r) => r.w === w);
      if (!run || !row) return null;
      const acc = rowMeasures(run, row).accuracy.filter((a): a is Measure => a !== null);
      if (acc.length === 0) return null;
      const value = acc.reduce((s, a) => s + a.value, 0) / acc.length;
      const error = Math.sqrt(acc.reduce((s, a) => s + (a.error ?? 0) ** 2, 0)) / acc.length;
      return single(value, error);
    };
    const kidAt = (run: AnswerRun | undefined, w: number): Measure | null => {
      const row = run?.guidance?.find((r) => r.w === w);
      return run && row ? rowMeasures(run, row).kid : null;
    };
    const onehot = runs.find((r) => r.overrides[ENCODING] === "onehot");
    const integer = runs.find((r) => r.overrides[ENCODING] === "integer");
    const weights = (onehot ?? runs[0]).guidance!.map((r) => r.w).sort((a, b) => a - b);
    const w0 = weights[0];
    const wMax = weights.at(-1)!;
    const pair = (
      what: string,
      a: Measure | null,
      b: Measure | null,
      labels: [string, string],
      expect: Check["expect"],
    ):
      | Check
      | null => (a && b ? { what, aLabel: labels[0], bLabel: labels[1], a, b, expect } : null);
    const judged = judge([
      pair(
        `one-hot's mean accuracy over integer's at w = ${w0}`,
        meanAccuracy(integer, w0),
        meanAccuracy(onehot, w0),
        ["integer", "one-hot"],
        "increase",
      ),
      ...(w0 !== wMax
        ? [
          pair(
            `one-hot's mean accuracy from w = ${w0} to ${wMax}`,
            meanAccuracy(onehot, w0),
            meanAccuracy(onehot, wMax),
            [`w = ${w0}`, `w = ${wMax}`],
            "increase",
          ),
          pair(
            `one-hot's KID from w = ${w0} to ${wMax}`,
            kidAt(onehot, w0),
            kidAt(onehot, wMax),
            [`w = ${w0}`, `w = ${wMax}`],
            "increase",
          ),
        ]
        : []),
    ]);
    const pictures: Picture[] = runs.flatMap((run) => {
      const encoding = String(run.overrides[ENCODING]);
      const files = [`samples-w${w0}.png`, `samples-w${wMax}.png`].filter((f, i, all) =>
        all.indexOf(f) === i && run.images.includes(f)
      );
      const chosen = files.length > 0 ? files : run.images.filter((f) => f === "samples.png");
      return chosen.map((file) => ({
        dir: run.dir,
        file,
        name: `${encoding}-${file}`,
        caption: `${encoding}, ${file === "samples.png" ? "" : `w = ${file.slice(9, -4)}, `}` +
          "one row per hair colour",
      }));
    });
    return {
      tables: [table, ...(judged.length > 0 ? [differencesTable(judged)] : [])],
      pictures,
      charts: [],
      verdict: judged.length > 0 ? `${details(judged)}. ${summarise(judged)}` : NOT_ENOUGH,
      notes: [],
    };
  },
};

/** Every question, in the order the answers run and show them. */
export const QUESTIONS: readonly Question[] = [Q1, Q2, SEED002, SEED003, SEED004];

/** Builds the answer of `question` from its sweep (null: not run yet). */
export function buildSection(question: Question, sweep: AnswerSweep | null): Section {
  const head = {
    id: question.id,
    title: question.title,
    seeds: question.seeds,
    claim: question.claim,
  };
  if (!sweep) {
    return {
      ...head,
      points: { complete: 0, total: 0 },
      tables: [],
      pictures: [],
      charts: [],
      verdict: "Not run yet at this budget.",
      notes: [],
    };
  }
  const done = complete(sweep.runs).length;
  const built = question.build(sweep);
  const notes = [...built.notes];
  if (done < sweep.runs.length) {
    const missing = sweep.runs.filter((r) => r.status !== "complete");
    notes.push(
      `${done} of ${sweep.runs.length} points are complete; missing: ` +
        missing.map((r) => `point ${r.index} (${r.status})`).join(", ") + ".",
    );
  }
  return { ...head, points: { complete: done, total: sweep.runs.length }, ...built, notes };
}
