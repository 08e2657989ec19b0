/**
 * `deno task report`: the comparisons it computes, and the page of a real tiny sweep loaded in
 * headless chromium (no console errors, every run's section and picture present, a screenshot
 * kept in test-artifacts/).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { experimentFile, ROOT, runFile, TEST_CACHE, TINY } from "./helpers.ts";
import { main } from "../src/cli/mod.ts";
import { runExperiment } from "../src/run/runner.ts";
import { decodePng } from "../src/io/image.ts";
import { loadSweep } from "../src/sweep/mod.ts";
import { buildIndex, readIndex, refreshIndex, writeIndex } from "../src/sweep/sweep_index.ts";
import { readManifest, writeManifest } from "../src/run/manifest.ts";
import {
  differingPaths,
  metricColumns,
  runLabels,
  seedMeans,
  smoothLoss,
} from "../src/report/compare.ts";
import { writeReport } from "../src/report/mod.ts";
import { findChromium, visitPage } from "./browser.ts";

Deno.test("config differences, run labels, metric columns with their std, smoothed loss", () => {
  const a = {
    name: "x",
    schedule: { timesteps: 100, betaEnd: 0.02 },
    model: { multipliers: [1, 2] },
  };
  const b = {
    name: "x",
    schedule: { timesteps: 200, betaEnd: 0.02 },
    model: { multipliers: [1, 2, 4] },
  };
  assert.deepEqual(differingPaths([a, b]), ["model.multipliers", "schedule.timesteps"]);
  assert.deepEqual(runLabels([a, b], { fallback: String }), [
    "multipliers=[1,2] timesteps=100",
    "multipliers=[1,2,4] timesteps=200",
  ]);
  assert.deepEqual(runLabels([a, a], { fallback: (i) => `run ${i}` }), ["run 0", "run 1"]);
  assert.deepEqual(
    metricColumns([
      { finalLoss: 0.1, kid_iv3m5: 0.02, kid_iv3m5_std: 0.001, note: "x" },
      { fidStd: 1, fid: 30 },
    ]),
    [{ key: "finalLoss" }, { key: "kid_iv3m5", std: "kid_iv3m5_std" }, {
      key: "fid",
      std: "fidStd",
    }],
  );
  const losses = [1, 2, 3, 4, 5, 6].map((loss, i) => ({ step: i + 1, loss }));
  assert.deepEqual(smoothLoss(losses, { window: 2, points: 3 }), [
    { step: 2, loss: 1.5 },
    { step: 4, loss: 3.5 },
    { step: 6, loss: 5.5 },
  ]);
});

/** Runs the points of a tiny sweep in this process (no child processes) and writes its index. */
async function tinySweep(out: string, seeds?: number[]): Promise<string> {
  const file = await experimentFile({
    ...TINY,
    name: "tiny-report",
    sampler: { ...TINY.sampler, trajectory: { count: 2, frames: 4, gifFrames: 4 } },
    sweep: { "schedule.timesteps": [4, 8], ...(seeds ? { seeds } : {}) },
  });
  const sweep = await loadSweep(file);
  for (const point of sweep.points) {
    await runExperiment(point.loaded, { outRoot: out, log: () => {}, cacheDir: TEST_CACHE });
  }
  const index = buildIndex(sweep, { outRoot: out, launcher: "local" });
  const path = join(out, "tiny-report", "sweep.json");
  await writeIndex(await refreshIndex(index, path), path);
  return path;
}

const chromium = await findChromium();
if (!chromium) {
  console.log("ignoring the browser test: chromium is not installed (.ci/run installs it)");
}

/** The report of a tiny sweep with evaluation numbers, written once for the tests below. */
let tinyReport:
  | Promise<{ out: string; result: Awaited<ReturnType<typeof writeReport>> }>
  | undefined;
function reportOfTinySweep(): Promise<{
  out: string;
  result: Awaited<ReturnType<typeof writeReport>>;
}> {
  tinyReport ??= (async () => {
    const out = await Deno.makeTempDir();
    const sweepPath = await tinySweep(out);
    // Evaluation numbers as the eval module records them: KID and FID in the manifest summary,
    // KID's std only in eval.jsonl.
    const { index } = (await readIndex(sweepPath))!;
    for (const [i, point] of index.points.entries()) {
      const dir = join(out, "tiny-report", point.run);
      const manifest = (await readManifest(dir))!;
      Object.assign(manifest.summary, { kid_iv3m5: 0.05 - i * 0.01, fid_iv3m5: 120 - i * 10 });
      await writeManifest(dir, manifest);
      const metrics = { kid_iv3m5: 0.05 - i * 0.01, kid_iv3m5_std: 0.004, fid_iv3m5: 120 - i * 10 };
      await Deno.writeTextFile(
        join(dir, "eval.jsonl"),
        `${JSON.stringify({ epoch: 1, step: 3, metrics: { ...metrics, kid_iv3m5_std: 9 } })}\n` +
          `${JSON.stringify({ epoch: 2, step: 6, final: true, metrics })}\n`,
      );
    }
    return { out, result: await writeReport([sweepPath], { out: join(out, "report") }) };
  })();
  return tinyReport;
}

Deno.test("the report of a sweep shows its answer table, charts and config differences", async () => {
  const { out, result } = await reportOfTinySweep();
  assert.equal(result.runs.length, 2);
  // samples, trajectory GIF and strip, forward for each run
  assert.equal(result.images.length, 8);
  const html = await Deno.readTextFile(result.page);
  assert.match(html, /<table class="answer">/);
  assert.match(html, /<th>√ᾱ<sub>T<\/sub><\/th><th>training time<\/th><th>sampling time<\/th>/);
  assert.match(html, /<svg[^>]*class="marks"/, "the loss chart is inline SVG");
  assert.match(html, /finalLoss against schedule\.timesteps/);
  assert.match(html, /kid_iv3m5 against schedule\.timesteps/);
  assert.match(html, /<th>kid_iv3m5 ± std<\/th><th>fid_iv3m5<\/th><th>final loss<\/th>/);
  assert.match(html, /<td class="num">0\.05000 ± 0\.004000<\/td><td class="num">120<\/td>/);
  assert.doesNotMatch(html, /<script/);
  assert.doesNotMatch(html, /Mean over seeds/, "one seed: no mean over seeds");
  // T = 4 vs 8: the only config difference, highlighted.
  assert.match(
    html,
    /<td><code>schedule\.timesteps<\/code><\/td><td class="diff">4<\/td><td class="diff">8<\/td>/,
  );
  // The CLI: bad input exits 2.
  const { error } = console;
  const errors: string[] = [];
  console.error = (...a: unknown[]) => errors.push(a.join(" "));
  try {
    assert.equal(await main(["report", join(out, "nothing-here")]), 2);
  } finally {
    console.error = error;
  }
  assert.match(errors[0], /nothing-here: no such file or folder/);
});

Deno.test({
  name: "the report loads in chromium without errors, with every run's section and picture",
  ignore: chromium === null,
  fn: async () => {
    const { result } = await reportOfTinySweep();
    const visit = await visitPage(`file://${result.page}`, {
      chromium: chromium!,
      expression: `JSON.stringify({
        runs: [...document.querySelectorAll("section.run")].map((s) => s.dataset.run),
        sweeps: [...document.querySelectorAll("section.sweep")].map((s) => s.dataset.sweep),
        images: [...document.images].map((i) => ({ src: i.getAttribute("src"), ok: i.complete && i.naturalWidth > 0 })),
        answerRows: document.querySelectorAll("table.answer tbody tr").length,
        charts: document.querySelectorAll("svg.marks").length,
      })`,
    });
    await Deno.mkdir(join(ROOT, "test-artifacts"), { recursive: true });
    const shotPath = join(ROOT, "test-artifacts", "report.png");
    await Deno.writeFile(shotPath, visit.screenshot);
    console.log(`  screenshot: ${shotPath}`);
    assert.deepEqual(visit.errors, []);
    const page = JSON.parse(visit.value as string);
    assert.deepEqual(page.runs, result.runs);
    assert.deepEqual(page.sweeps, ["tiny-report"]);
    assert.equal(page.answerRows, 2);
    assert.ok(page.charts >= 3, `charts: ${page.charts}`);
    // Every picture of every run is on the page and decoded by the browser.
    for (const image of result.images) {
      assert.ok(page.images.some((i: { src: string }) => i.src === image), image);
    }
    const broken = page.images.filter((i: { ok: boolean }) => !i.ok);
    assert.deepEqual(broken, []);
    const png = await decodePng(visit.screenshot);
    assert.ok(png.width > 1200 && png.width <= 1300, `the window width (${png.width} px)`);
    assert.ok(png.height > 1500, `a full-page screenshot (${png.height} px)`);
  },
});

Deno.test("report <outputs root>: the runs at any depth, sweeps among them", async () => {
  const { out } = await reportOfTinySweep();
  // A run three folders further down, beside the sweep and the report of the test above.
  const file = await experimentFile({
    ...TINY,
    name: "tiny-deep",
    train: { ...TINY.train, epochs: 1 },
  });
  const deep = await runFile(file, { outRoot: join(out, "more", "deeper") });
  assert.equal(deep.status, "complete");
  const lines: string[] = [];
  const { log } = console;
  console.log = (...a: unknown[]) => lines.push(a.join(" "));
  try {
    assert.equal(await main(["report", out, "--out", join(out, "report-all")]), 0);
  } finally {
    console.log = log;
  }
  assert.match(lines.join("\n"), /^3 run\(s\), \d+ picture\(s\): .*report-all\/index\.html$/m);
  const html = await Deno.readTextFile(join(out, "report-all", "index.html"));
  assert.match(html, /data-sweep="tiny-report"/, "the sweep found below is a sweep");
  assert.match(html, /data-run="tiny-deep-seed-0-[0-9a-f]{8}"/);
  // A folder that holds no run at any depth is still refused.
  const empty = await Deno.makeTempDir();
  await Deno.mkdir(join(empty, "a", "b"), { recursive: true });
  const { error } = console;
  const errors: string[] = [];
  console.error = (...a: unknown[]) => errors.push(a.join(" "));
  try {
    assert.equal(await main(["report", empty]), 2);
  } finally {
    console.error = error;
  }
  assert.match(errors[0], /not a run folder, a sweep or a folder that holds runs/);
});

Deno.test("mean and sample std over seeds, grouped by the point's overrides", () => {
  const groups = seedMeans([
    { overrides: { T: 100 }, seed: 0, summary: { kid: 0.1, fid: 30 } },
    { overrides: { T: 100 }, seed: 1, summary: { kid: 0.3, fid: Number.NaN } },
    { overrides: { T: 500 }, seed: 0, summary: { kid: 0.2 } },
    { overrides: { T: 100 }, seed: 2, summary: { kid: 0.2, fid: 40 } },
  ], ["kid", "fid", "loss"]);
  assert.deepEqual(groups.map((g) => [g.overrides, g.seeds]), [[{ T: 100 }, [0, 1, 2]], [
    { T: 500 },
    [0],
  ]]);
  const kid = groups[0].stats.get("kid")!;
  assert.ok(Math.abs(kid.mean - 0.2) < 1e-12);
  assert.ok(Math.abs(kid.std! - 0.1) < 1e-12, "sample std of 0.1, 0.3, 0.2 is 0.1");
  assert.equal(kid.n, 3);
  // NaN is left out of n; one value has no std; a key nobody recorded has no entry.
  assert.deepEqual(groups[0].stats.get("fid"), { mean: 35, std: Math.sqrt(50), n: 2 });
  assert.deepEqual(groups[1].stats.get("kid"), { mean: 0.2, std: null, n: 1 });
  assert.equal(groups[0].stats.has("loss"), false);
});

Deno.test("a sweep over seeds: the report adds the mean ± std over seeds per point", async () => {
  const out = await Deno.makeTempDir();
  const sweepPath = await tinySweep(out, [0, 1]);
  const { index } = (await readIndex(sweepPath))!;
  assert.equal(index.points.length, 4);
  for (const [i, point] of index.points.entries()) {
    const dir = join(out, "tiny-report", point.run);
    const manifest = (await readManifest(dir))!;
    const kid = 0.1 * (i + 1); // T = 4: 0.1, 0.2; T = 8: 0.3, 0.4 (seeds vary fastest)
    Object.assign(manifest.summary, { kid_iv3m5: kid });
    await writeManifest(dir, manifest);
  }
  const result = await writeReport([sweepPath], { out: join(out, "report") });
  const html = await Deno.readTextFile(result.page);
  assert.match(html, /<h3>Mean over seeds<\/h3>/);
  const table = html.match(/<table class="seed-means">.*?<\/table>/s)![0];
  assert.match(
    table,
    /<th>seeds<\/th><th>kid_iv3m5 mean ± std<\/th><th>final loss mean ± std<\/th>/,
  );
  const rows = [
    ...table.matchAll(
      /<tr><td class="diff">(\d+)<\/td><td>0, 1<\/td><td class="num">([^<]+)<\/td>/g,
    ),
  ]
    .map((m) => [m[1], m[2]]);
  // mean of 0.1 and 0.2 is 0.15, sample std 0.0707...
  assert.deepEqual(rows, [["4", "0.1500 ± 0.07071"], ["8", "0.3500 ± 0.07071"]]);
});
