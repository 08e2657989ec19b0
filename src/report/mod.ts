/**
 * `deno task report`: a static HTML page comparing runs and sweeps (see html.ts), with their
 * pictures copied next to it so that the folder can be moved, mailed or opened offline.
 * @module
 */
import { join, resolve } from "node:path";
import { writeFileAtomic } from "../io/files.ts";
import { lossChart, sweepChart } from "./charts.ts";
import { collectInputs, type ReportRun, type ReportSweep } from "./collect.ts";
import { metricColumns, runLabels, smoothLoss } from "./compare.ts";
import { QUALITY_METRICS, renderPage } from "./html.ts";

export { collectInputs, type ReportInputs, type ReportRun } from "./collect.ts";

/** What {@link writeReport} wrote. */
export interface ReportResult {
  /** The page. */
  page: string;
  /** Run ids in page order. */
  runs: string[];
  /** Every image the page shows, relative to its folder. */
  images: string[];
}

/** Charts of a sweep with one numeric swept path: final loss and quality metrics against it. */
async function sweepCharts(
  sweep: ReportSweep,
  runs: readonly ReportRun[],
): Promise<[string, string][]> {
  const axes = Object.entries(sweep.index.axes);
  if (axes.length !== 1 || !axes[0][1].every((v) => typeof v === "number")) return [];
  const [axis] = axes[0];
  const points = sweep.index.points.map((p, i) => ({
    x: p.overrides[axis] as number,
    run: runs.find((r) => r.id === sweep.runIds[i]),
  })).filter((p) => p.run !== undefined);
  const summaries = points.map((p) => p.run!.summary);
  const keys = [
    "finalLoss",
    ...metricColumns(summaries, { only: QUALITY_METRICS }).map((c) => c.key),
  ];
  const charts: [string, string][] = [];
  for (const key of keys) {
    const rows = points.map((p) => ({ x: p.x, y: p.run!.summary[key] }))
      .filter((r): r is { x: number; y: number } => typeof r.y === "number");
    if (rows.length < 2) continue;
    charts.push([`${key} against ${axis}`, await sweepChart(rows, { x: axis, y: key })]);
  }
  return charts;
}

/**
 * Writes `<out>/index.html` for the runs and sweeps at `paths` (run folders, sweep.json files or
 * their folders, folders of runs), copying their pictures to `<out>/assets/<run id>/`. Throws a
 * {@linkcode UserError} for a path that is not a run, a sweep or a folder of runs.
 */
export async function writeReport(
  paths: readonly string[],
  options: { out: string },
): Promise<ReportResult> {
  const inputs = await collectInputs(paths);
  const out = resolve(options.out);
  const images: string[] = [];
  for (const run of inputs.runs) {
    await Deno.mkdir(join(out, "assets", run.id), { recursive: true });
    for (const name of run.images) {
      await Deno.copyFile(join(run.dir, name), join(out, "assets", run.id, name));
      images.push(`assets/${run.id}/${name}`);
    }
  }
  const labels = runLabels(inputs.runs.map((r) => r.config), {
    fallback: (i) => inputs.runs[i].id,
  });
  const lossWindow = Math.max(
    1,
    Math.min(50, Math.floor(Math.max(...inputs.runs.map((r) => r.losses.length), 0) / 20)),
  );
  const series = inputs.runs.filter((r) => r.losses.length > 0).map((r, i) => ({
    label: labels[inputs.runs.indexOf(r)] ?? String(i),
    points: smoothLoss(r.losses, { window: lossWindow, points: 400 }),
  }));
  const sweepSvgs = new Map<string, [string, string][]>();
  for (const sweep of inputs.sweeps) {
    sweepSvgs.set(sweep.path, await sweepCharts(sweep, inputs.runs));
  }
  const html = renderPage({
    ...inputs,
    labels: new Map(inputs.runs.map((r, i) => [r.id, labels[i]])),
    imageSrc: (run, image) => `assets/${encodeURIComponent(run.id)}/${image}`,
    lossSvg: series.length > 0 ? await lossChart(series, { window: lossWindow }) : null,
    lossWindow,
    sweepSvgs,
    generatedAt: new Date().toISOString(),
  });
  const page = join(out, "index.html");
  await writeFileAtomic(page, html);
  return { page, runs: inputs.runs.map((r) => r.id), images };
}
