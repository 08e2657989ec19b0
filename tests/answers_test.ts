/**
 * `deno task answers` on fixture run folders (no training): each question's table and sentence
 * from known numbers, the arithmetic of errors, the documents' blocks, the dry-run listing, and
 * the command end to end on complete fixture runs.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type AnswerSweep, readAnswerSweep } from "../src/answers/collect.ts";
import { runAnswers } from "../src/answers/mod.ts";
import { difference, finding, formatMeasure, overSeeds, single } from "../src/answers/measure.ts";
import {
  accuracyMeasure,
  buildSection,
  Q1,
  Q2,
  SEED002,
  SEED003,
  SEED004,
} from "../src/answers/questions.ts";
import { markdownTable, spliceAnswers } from "../src/answers/render.ts";
import { loadSweep } from "../src/sweep/mod.ts";
import { buildIndex } from "../src/sweep/sweep_index.ts";
import { decodePng, encodePng } from "../src/io/image.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

/** What a fixture run folder holds. */
interface FixtureRun {
  overrides: Record<string, unknown>;
  seed?: number;
  status?: string;
  summary?: Record<string, unknown>;
  /** eval.jsonl lines. */
  evals?: Json[];
  losses?: { step: number; epoch: number; loss: number }[];
  timings?: { step: number; seconds: number }[];
  recovery?: Json;
  guidance?: Json[];
  labelled?: number;
  /** Write a 4x4 samples.png (and these other pictures). */
  pictures?: string[];
  /** The final evaluation's KID std. */
  kidStd?: number;
}

const PNG = await encodePng({ width: 4, height: 4, data: new Uint8Array(48).fill(200) });

/** Writes a run folder with what `run` says. */
async function writeRun(dir: string, run: FixtureRun): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const summary = { ...run.summary };
  await Deno.writeTextFile(
    join(dir, "manifest.json"),
    JSON.stringify({
      format: 1,
      name: "fixture",
      seed: run.seed ?? 0,
      configHash: "0".repeat(64),
      trainingHash: "1".repeat(64),
      status: run.status ?? "complete",
      source: { file: "fixture.json", chain: [], overrides: [] },
      versions: {},
      backend: {},
      git: null,
      startedAt: "2026-01-01T00:00:00.000Z",
      endedAt: "2026-01-01T00:10:00.000Z",
      summary,
      artifacts: {},
      volatileArtifacts: {},
    }),
  );
  await Deno.writeTextFile(join(dir, "config.json"), "{}");
  const lines = (xs: unknown[]) => xs.map((x) => JSON.stringify(x) + "\n").join("");
  const evals = run.evals ??
    (typeof summary.kid_iv3m5 === "number"
      ? [{
        step: 100,
        epoch: 16,
        final: true,
        metrics: {
          kid_iv3m5: summary.kid_iv3m5,
          kid_iv3m5_std: run.kidStd ?? 0.004,
          fid_iv3m5: summary.fid_iv3m5,
        },
        floor: null,
      }]
      : []);
  await Deno.writeTextFile(join(dir, "eval.jsonl"), lines(evals));
  if (run.losses) await Deno.writeTextFile(join(dir, "metrics.jsonl"), lines(run.losses));
  if (run.timings) await Deno.writeTextFile(join(dir, "timings.jsonl"), lines(run.timings));
  if (run.recovery) {
    await Deno.writeTextFile(join(dir, "recovery.json"), JSON.stringify(run.recovery));
  }
  if (run.guidance) {
    await Deno.writeTextFile(join(dir, "guidance.json"), JSON.stringify(run.guidance));
  }
  if (run.labelled !== undefined) {
    await Deno.writeTextFile(
      join(dir, "samples-labels.json"),
      JSON.stringify({
        rows: [],
        columns: 1,
        images: Array.from({ length: run.labelled }, () => ({})),
      }),
    );
  }
  for (const name of ["samples.png", ...(run.pictures ?? [])]) {
    await Deno.writeFile(join(dir, name), PNG);
  }
}

/** Writes a sweep of fixture runs (sweep.json and a folder per point) and reads it back. */
async function fixtureSweep(runs: FixtureRun[]): Promise<AnswerSweep> {
  const root = await Deno.makeTempDir();
  const points = [];
  for (const [index, run] of runs.entries()) {
    const rel = `seed-${run.seed ?? 0}-${String(index).padStart(8, "0")}`;
    await writeRun(join(root, rel), run);
    points.push({
      index,
      overrides: run.overrides,
      seed: run.seed ?? 0,
      run: rel,
      configHash: "0".repeat(64),
      trainingHash: "1".repeat(64),
      status: run.status ?? "complete",
      log: `logs/point-${index}.log`,
    });
  }
  await Deno.writeTextFile(
    join(root, "sweep.json"),
    JSON.stringify({
      format: 1,
      name: "fixture",
      file: "f.json",
      mode: "grid",
      axes: {},
      seeds: [],
      sets: [],
      launcher: "local",
      createdAt: "",
      updatedAt: "",
      points,
    }),
  );
  return (await readAnswerSweep(root))!;
}

/** 50 losses alternating around `mean` (±0.01), epoch `epoch`. */
function losses(mean: number, options: { from?: number; epoch?: number } = {}) {
  const from = options.from ?? 0;
  return Array.from({ length: 50 }, (_, i) => ({
    step: from + i + 1,
    epoch: options.epoch ?? 0,
    loss: mean + (i % 2 === 0 ? 0.01 : -0.01),
  }));
}

/** Timings every 10 steps with rates alternating 0.30 and 0.32 s/step. */
const TIMINGS = Array.from({ length: 11 }, (_, i) => ({
  step: i * 10,
  seconds: Array.from({ length: i }, (_, k) => (k % 2 === 0 ? 3.0 : 3.2)).reduce(
    (a, b) => a + b,
    0,
  ),
}));

Deno.test("measures: mean over seeds, errors, differences and their findings", () => {
  const m = overSeeds([single(0.04, 0.01), single(0.042, 0.01), single(0.044, 0.01)])!;
  assert.ok(Math.abs(m.value - 0.042) < 1e-12);
  assert.ok(Math.abs(m.spread! - 0.002) < 1e-12);
  assert.ok(Math.abs(m.error! - 0.002 / Math.sqrt(3)) < 1e-12);
  assert.equal(m.n, 3);
  assert.equal(formatMeasure(m), "0.0420 ± 0.0020");
  assert.deepEqual(overSeeds([single(5, 1)]), single(5, 1)); // one seed keeps its own error
  assert.equal(overSeeds([null, undefined]), null);
  // 0.05 ± 0.004 against 0.03 ± 0.004: Δ = −0.02, 2σ = 2√2 · 0.004 = 0.0113
  const d = difference(single(0.05, 0.004), single(0.03, 0.004));
  assert.ok(d.significant && d.measured);
  assert.equal(finding(d, "decrease"), "holds");
  assert.equal(finding(d, "increase"), "contradicted");
  assert.equal(finding(d, "same"), "contradicted");
  assert.equal(
    finding(difference(single(0.05, 0.004), single(0.045, 0.004)), "decrease"),
    "not shown",
  );
  // no error bar: the 5% rule
  assert.equal(difference(single(500), single(502)).significant, false);
  assert.equal(difference(single(10), single(50)).significant, true);
  assert.equal(difference(single(10), single(50)).measured, false);
});

Deno.test("question 1: the table and the sentence from four T's", async () => {
  const rows: [number, number, number, number, number, number][] = [
    // T, train s, sample s, MiB, KID, FID
    [100, 300, 10, 500, 0.05, 40],
    [200, 302, 20, 501, 0.04, 35],
    [300, 299, 30, 500, 0.035, 32],
    [500, 300.5, 50, 502, 0.03, 30],
  ];
  const sweep = await fixtureSweep(rows.map(([t, train, sample, mib, kid, fid]) => ({
    overrides: { "schedule.timesteps": t },
    summary: {
      trainSeconds: train,
      sampleSeconds: sample,
      trainPeakRssMiB: mib,
      kid_iv3m5: kid,
      fid_iv3m5: fid,
      floor_kid_iv3m5: 0.001,
      floor_fid_iv3m5: 2,
      sqrtAlphaBarT: Math.sqrt(0.36),
      samplingSteps: t,
      steps: 100,
    },
    losses: losses(0.21),
    timings: TIMINGS,
  })));
  const section = buildSection(Q1, sweep);
  assert.deepEqual(section.points, { complete: 4, total: 4 });
  const [table, diffs] = section.tables;
  assert.deepEqual(table.rows[0], [
    "100",
    "0",
    "0.600",
    "300.00 ± 0.33 s",
    "10.0 s",
    "500 MiB",
    "0.2100 ± 0.0014",
    "0.0500 ± 0.0040 (floor 0.00100)",
    "40.0 (floor 2.00)",
  ]);
  assert.equal(table.rows[3][0], "500");
  assert.equal(diffs.rows.length, 5);
  assert.deepEqual(diffs.rows.map((r) => [r[0], r[5], r[6]]), [
    ["training time", "no", "expected to rise: not shown"],
    ["sampling time", "yes (> 5% rule)", "expected to rise: holds"],
    ["peak memory", "no (> 5% rule)", "expected to rise: not shown"],
    ["KID", "yes", "expected to fall: holds"],
    ["FID", "yes (> 5% rule)", "expected to fall: holds"],
  ]);
  assert.match(section.verdict, /^From T = 100 to T = 500: /);
  assert.match(section.verdict, /sampling time: 10\.0 → 50\.0 s \(×5\.00; one measurement each/);
  assert.match(
    section.verdict,
    /KID: 0\.0500 → 0\.0300 \(−0\.0200, larger than 2× its error 0\.00566\)/,
  );
  assert.match(
    section.verdict,
    /At this budget the claim holds in part: it holds for sampling time, KID and FID; it is not shown for training time and peak memory \(no difference larger than its error\)\./,
  );
  assert.deepEqual(section.pictures.map((p) => p.name), [
    "t100.png",
    "t200.png",
    "t300.png",
    "t500.png",
  ]);
  // markdown: pipes in cells are escaped, the note follows
  assert.match(
    markdownTable({ head: ["a|b"], rows: [["1"]], note: "n" }),
    /\| a\\\|b \|\n\| --- \|\n\| 1 \|\n\n<sub>n<\/sub>/,
  );
});

Deno.test("question 2: means over 3 seeds, diversity kept with x_T = 0, none with both off", async () => {
  const groups: [string, boolean, number[], number[]][] = [
    ["gaussian", true, [0.04, 0.042, 0.044], [10, 11, 12]],
    ["gaussian", false, [0.2, 0.21, 0.22], [8, 8.5, 9]],
    ["zeros", true, [0.05, 0.05, 0.05], [9, 10, 11]],
    ["zeros", false, [0.5, 0.5, 0.5], [0, 0, 0]],
  ];
  const sweep = await fixtureSweep(
    groups.flatMap(([noise, z, kids, divs]) =>
      kids.map((kid, seed) => ({
        overrides: { "sampler.initialNoise": noise, "sampler.stepNoise": z },
        seed,
        summary: {
          kid_iv3m5: kid,
          fid_iv3m5: 50,
          diversity_iv3m5: divs[seed],
          diversity_iv3m5_real: 12,
        },
      }))
    ),
  );
  const section = buildSection(Q2, sweep);
  const [table] = section.tables;
  assert.deepEqual(table.rows[0], [
    "N(0, I)",
    "on",
    "0, 1, 2",
    "0.0420 ± 0.0020",
    "50.0",
    "11.0 ± 1.0",
    "12.0",
  ]);
  assert.deepEqual(table.rows[3].slice(0, 2), ["0", "off"]);
  assert.match(
    section.verdict,
    /diversity with x_T = 0: 11\.0 → 10\.0 \(−1\.00, within 2× its error 0\.816\)/,
  );
  assert.match(section.verdict, /KID without z: 0\.0420 → 0\.210 \(\+0\.168, larger than/);
  assert.match(
    section.verdict,
    /holds for KID without z; it is not shown for diversity with x_T = 0/,
  );
  assert.match(section.verdict, /keep 90\.9% of the diversity/);
  assert.match(section.verdict, /With both off, every sample is the same image \(diversity 0\)\./);
  assert.equal(section.pictures.length, 4);
});

Deno.test("seed 002: the variances compared, and which t's the recovery keeps the face", async () => {
  const stat = (mean: number, std: number) => ({ mean, std, n: 8 });
  const recovery = {
    distance: "rms",
    count: 8,
    t: [
      {
        t: 100,
        noisedToOriginal: stat(0.1, 0.01),
        toOriginal: { beta: stat(0.06, 0.01), posterior: stat(0.05, 0.01) },
        toRandom: { beta: stat(0.3, 0.02), posterior: stat(0.3, 0.02) },
        originalToRandom: stat(0.31, 0.02),
      },
      {
        t: 1000,
        noisedToOriginal: stat(0.5, 0.01),
        toOriginal: { beta: stat(0.3, 0.03), posterior: stat(0.3, 0.03) },
        toRandom: { beta: stat(0.31, 0.03), posterior: stat(0.31, 0.03) },
        originalToRandom: stat(0.31, 0.02),
      },
    ],
  };
  const sweep = await fixtureSweep([
    {
      overrides: { "sampler.variance": "beta" },
      summary: { kid_iv3m5: 0.03, fid_iv3m5: 20 },
      kidStd: 0.003,
      recovery,
      pictures: ["recovery.png"],
    },
    {
      overrides: { "sampler.variance": "posterior" },
      summary: { kid_iv3m5: 0.031, fid_iv3m5: 21 },
      kidStd: 0.003,
      recovery,
    },
  ]);
  const section = buildSection(SEED002, sweep);
  assert.deepEqual(section.tables[0].rows.map((r) => r[0]), ["β", "β̃"]);
  const rec = section.tables.at(-1)!;
  assert.deepEqual(rec.rows[0], [
    "100",
    "0.100 ± 0.010",
    "0.060 ± 0.010",
    "0.050 ± 0.010",
    "0.300 ± 0.020",
    "0.310 ± 0.020",
  ]);
  assert.match(section.verdict, /the two variances give images of the same quality at this budget/);
  assert.match(
    section.verdict,
    /Recovered from t = 100, the faces are closer to their originals than to other faces by more than 2× the error: the claim that they are totally different does not hold there; from t = 1000 it holds\./,
  );
  assert.deepEqual(section.pictures.map((p) => p.name), [
    "sigma-beta.png",
    "sigma-posterior.png",
    "recovery.png",
  ]);
});

Deno.test("seed 003: a rise of KID between epochs beyond its error, the loss's fall, the chart", async () => {
  const kids = [0.1, 0.06, 0.08, 0.05];
  const epochLoss = [0.5, 0.3, 0.25, 0.24];
  const sweep = await fixtureSweep([{
    overrides: {},
    summary: { kid_iv3m5: 0.05, fid_iv3m5: 30 },
    evals: kids.map((kid, i) => ({
      step: (i + 1) * 50,
      epoch: i + 1,
      final: i === kids.length - 1,
      metrics: { kid_iv3m5: kid, kid_iv3m5_std: 0.005, fid_iv3m5: 60 - 10 * i },
      floor: null,
    })),
    losses: epochLoss.flatMap((l, e) => losses(l, { from: e * 50, epoch: e })),
  }]);
  const section = buildSection(SEED003, sweep);
  assert.deepEqual(section.tables[0].rows.map((r) => r[0]), ["1", "2", "3", "4 (final)"]);
  assert.deepEqual(section.tables[0].rows[2], ["3", "0.2500 ± 0.0014", "0.0800 ± 0.0050", "40.0"]);
  assert.match(
    section.verdict,
    /KID got worse by more than 2× its error 1 time\(s\) between consecutive epochs \(2 → 3\)/,
  );
  assert.match(
    section.verdict,
    /The loss fell from 0\.500 to 0\.240, 76\.9% of that by the middle epoch\./,
  );
  assert.equal(section.charts.length, 1);
  const values = (section.charts[0].spec as Json).data.values;
  assert.equal(values.length, 12); // 4 epochs x loss, KID, FID
  assert.deepEqual(values.find((v: Json) => v.metric === "KID" && v.epoch === 3), {
    epoch: 3,
    metric: "KID",
    value: 0.08,
    low: 0.075,
    high: 0.085,
  });
});

Deno.test("seed 004: accuracies with binomial errors, one-hot against integer, guidance", async () => {
  const rows = (w0: [number, number], w5: [number, number], kids: [number, number]) =>
    [0, 5].map((w, i) => ({
      w,
      "accuracy/hairColor": [w0, w5][i][0],
      "accuracy/glasses": [w0, w5][i][1],
      kid_iv3m5: kids[i],
      kid_iv3m5_std: 0.005,
      "real/hairColor": 0.95,
      "real/glasses": 0.98,
    }));
  const sweep = await fixtureSweep([
    {
      overrides: { "model.conditioning.encoding": "onehot" },
      guidance: rows([0.5, 0.6], [0.7, 0.7], [0.05, 0.09]),
      labelled: 96,
      pictures: ["samples-w0.png", "samples-w5.png"],
    },
    {
      overrides: { "model.conditioning.encoding": "integer" },
      guidance: rows([0.3, 0.5], [0.4, 0.5], [0.06, 0.07]),
      labelled: 96,
    },
  ]);
  const section = buildSection(SEED004, sweep);
  const [table, diffs] = section.tables;
  assert.deepEqual(table.head, ["encoding", "w", "hairColor accuracy", "glasses accuracy", "KID"]);
  assert.deepEqual(table.rows[0], [
    "onehot",
    "0",
    "0.500 ± 0.051",
    "0.600 ± 0.050",
    "0.0500 ± 0.0050",
  ]);
  assert.deepEqual(table.rows.at(-1), ["real images", "–", "0.950", "0.980", "–"]);
  assert.equal(accuracyMeasure(0.5, 96).error, Math.sqrt(0.25 / 96));
  assert.ok(accuracyMeasure(1, 96).error! > 0, "a perfect score still has an error");
  assert.deepEqual(diffs.rows.map((r) => r[6]), [
    "expected to rise: holds",
    "expected to rise: holds",
    "expected to rise: holds",
  ]);
  assert.match(section.verdict, /The claim holds at this budget/);
  assert.deepEqual(section.pictures.map((p) => p.name), [
    "onehot-samples-w0.png",
    "onehot-samples-w5.png",
    "integer-samples.png",
  ]);
});

Deno.test("answers.md: writing one budget's block keeps the other's", () => {
  const cpu = "<!-- answers:cpu:begin -->\ncpu one\n<!-- answers:cpu:end -->";
  const gpu = "<!-- answers:gpu:begin -->\ngpu\n<!-- answers:gpu:end -->";
  const first = spliceAnswers(null, { block: cpu, budget: "cpu" });
  assert.match(first, /^# Answers to the seeds' questions/);
  const both = spliceAnswers(first, { block: gpu, budget: "gpu" });
  assert.ok(both.indexOf("cpu one") < both.indexOf("gpu\n"));
  const again = spliceAnswers(both, { block: cpu.replace("cpu one", "cpu two"), budget: "cpu" });
  assert.ok(!again.includes("cpu one") && again.includes("cpu two") && again.includes("gpu\n"));
  assert.equal(again.match(/answers:cpu:begin/g)!.length, 1);
});

/** A budgets file whose one budget, `tiny`, only renames things (nothing is run in these tests). */
async function tinyBudgets(): Promise<string> {
  const path = join(await Deno.makeTempDir(), "budgets.json");
  await Deno.writeTextFile(
    path,
    JSON.stringify({
      tiny: {
        description: "fixtures",
        out: "unused",
        sets: ["dataset.count=64", "transform.size=8"],
        questions: { "seed003-cosine": ["train.epochs=2"] },
      },
    }),
  );
  return path;
}

Deno.test("answers --dry-run lists every point: trains, reuses (across questions), complete", async () => {
  const budgetsFile = await tinyBudgets();
  const outRoot = await Deno.makeTempDir();
  const lines: string[] = [];
  const dry = () =>
    runAnswers({
      budget: "tiny",
      budgetsFile,
      outRoot,
      dryRun: true,
      estimate: false,
      log: (l) => lines.push(l),
    });
  const first = await dry();
  const listing = first.listing!;
  assert.match(listing, /^budget tiny: runs under /);
  assert.match(listing, /\nq1-steps: Question 1: the number of diffusion steps T\n/);
  assert.match(
    listing,
    / {2}4 points, 0 complete; by hand: deno task sweep \S*experiments\/answers\/q1-steps\.json --out \S+ --set dataset\.count=64 --set transform\.size=8\n/,
  );
  hasLine(listing, "point 1  schedule.timesteps=200 seed=0  trains");
  // question 2 at seed 0 reuses question 1's T = 200 training; seeds 1 and 2 train once each
  hasLine(
    listing,
    'point 0  sampler.initialNoise="gaussian" sampler.stepNoise=true seed=0  reuses the training of q1-steps point 1',
  );
  hasLine(
    listing,
    'point 1  sampler.initialNoise="gaussian" sampler.stepNoise=true seed=1  trains',
  );
  hasLine(
    listing,
    'point 11  sampler.initialNoise="zeros" sampler.stepNoise=false seed=2  reuses the training of q2-noise point 2',
  );
  hasLine(
    listing,
    'point 1  sampler.variance="posterior" seed=0  reuses the training of seed002-variance point 0',
  );
  assert.match(listing, /--set train\.epochs=2/); // the question's own budget sets
  assert.match(listing, /\n21 point\(s\) left to run \(not estimated\)$/);
  assert.equal(lines.join("\n"), listing);
  // nothing written
  assert.deepEqual([...Deno.readDirSync(outRoot)], []);

  // a complete point is listed as such
  const sweep = await loadSweep(join(ROOT_ANSWERS, "q1-steps.json"), {
    sets: ["dataset.count=64", "transform.size=8"],
  });
  const index = buildIndex(sweep, { outRoot, launcher: "local" });
  await writeRun(join(outRoot, "answers-q1-steps", index.points[1].run), { overrides: {} });
  const second = (await dry()).listing!;
  hasLine(second, "point 1  schedule.timesteps=200 seed=0  complete");
  assert.match(second, /\n20 point\(s\) left to run \(not estimated\)$/);
});

/** Whether `text` has the line `line` (its leading spaces: two). */
function hasLine(text: string, line: string): void {
  assert.ok(text.split("\n").includes(`  ${line}`), `no line "  ${line}" in:\n${text}`);
}

const ROOT_ANSWERS = new URL("../experiments/answers", import.meta.url).pathname;

Deno.test("answers end to end on complete fixture runs: nothing runs, the documents are written", async () => {
  const budgetsFile = await tinyBudgets();
  const outRoot = await Deno.makeTempDir();
  const docsDir = await Deno.makeTempDir();
  const sets = ["dataset.count=64", "transform.size=8"];
  const sweep = await loadSweep(join(ROOT_ANSWERS, "q1-steps.json"), { sets });
  const index = buildIndex(sweep, { outRoot, launcher: "local" });
  for (const [i, point] of index.points.entries()) {
    await writeRun(join(outRoot, "answers-q1-steps", point.run), {
      overrides: point.overrides,
      summary: { kid_iv3m5: 0.05 - 0.005 * i, fid_iv3m5: 40 - i, sampleSeconds: 10 * (i + 1) },
    });
  }
  await Deno.writeTextFile(
    join(docsDir, "answers.md"),
    spliceAnswers(null, {
      block: "<!-- answers:gpu:begin -->\nkept\n<!-- answers:gpu:end -->",
      budget: "gpu",
    }),
  );
  const result = await runAnswers({
    budget: "tiny",
    budgetsFile,
    outRoot,
    docsDir,
    only: ["q1-steps"],
    log: () => {},
  });
  assert.deepEqual(result.failures, []);
  const md = await Deno.readTextFile(join(docsDir, "answers.md"));
  assert.match(md, /<!-- answers:tiny:begin -->\n\n## Budget `tiny`/);
  assert.match(
    md,
    /Made by `deno task answers --budget tiny` from 4 run folder\(s\)/,
  );
  assert.match(
    md,
    /\| 500 \| 0 \| [^|]+ \| – \| 40\.0 s \| – \| – \| 0\.0350 ± 0\.0040 \| 37\.0 \|/,
  );
  assert.match(md, /!\[T = 100 \(seed 0\)\]\(answers\/tiny\/q1-steps\/t100\.png\)/);
  assert.match(md, /\*\*Answer at this budget:\*\* From T = 100 to T = 500: /);
  // the questions not run at this budget are there, and say so
  assert.match(
    md,
    /### Question 2: [^\n]*\n\n\*\*Claim\*\* \(seed 000, 001\): [^\n]*\n\n\*\*Answer at this budget:\*\* Not run yet at this budget\./,
  );
  assert.match(md, /kept/); // the gpu block
  assert.ok(md.indexOf("answers:gpu:begin") < md.indexOf("answers:tiny:begin"));
  // the 4x4 fixture picture, enlarged by a whole factor (pixels repeated) to 256 px
  const picture = await decodePng(
    await Deno.readFile(join(docsDir, "answers", "tiny", "q1-steps", "t500.png")),
  );
  assert.deepEqual([picture.width, picture.height, picture.data[0]], [256, 256, 200]);
  const html = await Deno.readTextFile(join(docsDir, "answers", "tiny", "index.html"));
  assert.match(html, /<img src="q1-steps\/t100\.png"/);
  assert.match(html, /<td>0\.0350 ± 0\.0040<\/td>/);
});

Deno.test("the shipped budgets: every question's sweep resolves; question 2 shares question 1's training", async () => {
  const { loadBudget, questionSets } = await import("../src/answers/budgets.ts");
  const { QUESTIONS } = await import("../src/answers/questions.ts");
  const { trainingHash } = await import("../src/run/training_cache.ts");
  const { plannedSteps } = await import("../src/train/plan.ts");
  for (const name of ["cpu", "gpu"]) {
    const budget = await loadBudget(name);
    const sweeps = new Map<string, Awaited<ReturnType<typeof loadSweep>>>();
    for (const q of QUESTIONS) {
      sweeps.set(
        q.id,
        await loadSweep(join(ROOT_ANSWERS, `${q.id}.json`), { sets: questionSets(budget, q.id) }),
      );
    }
    const q1 = sweeps.get("q1-steps")!;
    assert.deepEqual(q1.points.map((p) => p.loaded.config.schedule.timesteps), [
      100,
      200,
      300,
      500,
    ]);
    const t200 = trainingHash(q1.points[1].loaded.config);
    const q2 = sweeps.get("q2-noise")!;
    assert.equal(q2.points.length, 12);
    for (const p of q2.points) {
      assert.equal(trainingHash(p.loaded.config) === t200, p.seed === 0, `q2 point ${p.index}`);
    }
    const seed003 = sweeps.get("seed003-cosine")!.points[0].loaded.config;
    assert.deepEqual([seed003.schedule.kind, seed003.schedule.timesteps, seed003.eval?.every], [
      "cosine",
      1000,
      1,
    ]);
    const seed002 = sweeps.get("seed002-variance")!.points[0].loaded.config;
    assert.deepEqual(seed002.recovery?.t, [100, 500, 1000]);
    const seed004 = sweeps.get("seed004-conditioning")!.points.map((p) => p.loaded.config);
    assert.deepEqual(seed004.map((c) => c.model.conditioning?.encoding), ["onehot", "integer"]);
    assert.deepEqual(seed004[0].sampler.guidance, [0, 1, 3, 5]);
    if (name === "cpu") {
      // the cpu budget: 16x16, about 1,250 steps per training, ONNX Runtime sampling
      for (const sweep of sweeps.values()) {
        for (const p of sweep.points) {
          const c = p.loaded.config;
          assert.equal(c.transform.size, 16);
          assert.equal(c.sampler.engine, "onnxruntime");
          const steps = plannedSteps((c.dataset as { count: number }).count, c.train).total;
          assert.ok(steps >= 1200 && steps <= 1300, `${c.name}: ${steps} steps`);
        }
      }
    } else {
      assert.equal(q1.points[0].loaded.config.transform.size, 32);
      assert.equal(seed002.transform.size, 64);
    }
  }
});
