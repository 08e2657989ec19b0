/**
 * The report page: one static HTML file (inline CSS, inline SVG charts, images next to it), no
 * script. Sweeps first (the table that answers them, charts, the samples side by side), then the
 * runs compared (config differences, metrics, loss curves), then one section per run.
 * @module
 */
import { describePoint } from "../sweep/points.ts";
import type { ReportInputs, ReportRun, ReportSweep } from "./collect.ts";
import {
  differingPaths,
  flattenJson,
  formatNumber,
  formatValue,
  type MetricColumn,
  metricColumns,
  type SeedGroup,
  seedMeans,
} from "./compare.ts";

/** What the page shows besides the inputs: labels, image paths and rendered charts. */
export interface PageModel extends ReportInputs {
  /** A label per run id (what sets the run apart). */
  labels: Map<string, string>;
  /** Image path relative to the page, by run id and image name. */
  imageSrc: (run: ReportRun, image: string) => string;
  /** Loss curves of every run (SVG), or null without metrics. */
  lossSvg: string | null;
  /** Window of the loss smoothing. */
  lossWindow: number;
  /** Charts of each sweep, by sweep path: [title, SVG]. */
  sweepSvgs: Map<string, [string, string][]>;
  /** When the page was written. */
  generatedAt: string;
}

/** Metric keys that measure sample quality (evaluation), shown in a sweep's answer table. */
export const QUALITY_METRICS = /kid|fid|diversity|judge|accuracy|precision|recall/i;

/** `text` escaped for HTML text and attribute values. */
export function escapeHtml(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;").replaceAll("'", "&#39;");
}

const e = escapeHtml;

const CSS = `
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1200px; padding: 0 16px;
  color: #1d2330; }
h1 { margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #d0d5de; }
.meta { color: #5b6475; }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { border: 1px solid #d0d5de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f1f3f7; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.diff, tr.diff td.value { background: #fff1b8; font-weight: 600; }
code { font-size: 12px; }
.gallery { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; } figcaption { font-size: 12px; color: #5b6475; max-width: 360px; }
img.pictures { image-rendering: pixelated; border: 1px solid #d0d5de; }
.charts { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.status-complete { color: #137333; } .status-failed, .status-killed { color: #b3261e; }
nav a { margin-right: 12px; }
`;

function table(head: string[], rows: string[][], options: { cls?: string } = {}): string {
  return `<table${options.cls ? ` class="${options.cls}"` : ""}><thead><tr>${
    head.map((h) => `<th>${h}</th>`).join("")
  }</tr></thead><tbody>${rows.map((r) => `<tr>${r.join("")}</tr>`).join("")}</tbody></table>`;
}

const num = (value: unknown) => `<td class="num">${e(formatNumber(value))}</td>`;
const text = (value: string, cls = "") => `<td${cls ? ` class="${cls}"` : ""}>${e(value)}</td>`;

function metricCell(summary: Record<string, unknown>, column: MetricColumn): string {
  const value = summary[column.key];
  const std = column.std ? summary[column.std] : undefined;
  const shown = typeof std === "number"
    ? `${formatNumber(value)} ± ${formatNumber(std)}`
    : formatNumber(value);
  return `<td class="num">${e(shown)}</td>`;
}

function seconds(value: unknown, reused: boolean): string {
  const shown = typeof value === "number" ? `${value.toFixed(1)} s` : "-";
  return `<td class="num">${e(shown)}${reused ? " <small>(reused)</small>" : ""}</td>`;
}

/** `width` and `height` attributes scaling a small picture up by a whole factor to about `target` px. */
function scaledSize(run: ReportRun, name: string, target: number): string {
  const [w, h] = run.sizes.get(name) ?? [0, 0];
  if (w === 0) return "";
  const scale = Math.max(1, Math.min(8, Math.floor(target / w)));
  return ` width="${w * scale}" height="${h * scale}"`;
}

/**
 * A sweep repeated over seeds: one row per point with each metric's mean ± sample std over its
 * seeds (and n when some runs lack the metric).
 */
function seedTable(
  groups: SeedGroup[],
  options: { axes: string[]; keys: string[] },
): string {
  const cell = (group: SeedGroup, key: string): string => {
    const stat = group.stats.get(key);
    if (!stat) return num(undefined);
    const spread = stat.std === null ? "" : ` ± ${formatNumber(stat.std)}`;
    const n = stat.n < group.seeds.length ? ` (n ${stat.n})` : "";
    return `<td class="num">${e(`${formatNumber(stat.mean)}${spread}${n}`)}</td>`;
  };
  const rows = groups.map((group) => [
    ...options.axes.map((a) => text(formatValue(group.overrides[a]), "diff")),
    text(group.seeds.join(", ")),
    ...options.keys.map((key) => cell(group, key)),
  ]);
  const head = [
    ...options.axes.map((a) => `<code>${e(a)}</code>`),
    "seeds",
    ...options.keys.map((k) => `${e(k === "finalLoss" ? "final loss" : k)} mean ± std`),
  ];
  return table(head, rows, { cls: "seed-means" });
}

function runLink(model: PageModel, id: string | null): string {
  return id ? `<a href="#run-${e(id)}">${e(model.labels.get(id) ?? id)}</a>` : "-";
}

function sweepSection(model: PageModel, sweep: ReportSweep): string {
  const { index } = sweep;
  const runs = sweep.runIds.map((id) => model.runs.find((r) => r.id === id) ?? null);
  const axes = Object.keys(index.axes);
  const columns = metricColumns(runs.map((r) => r?.summary ?? {}), {
    only: QUALITY_METRICS,
  });
  const rows = index.points.map((point, i) => {
    const run = runs[i];
    const summary = run?.summary ?? {};
    const schedule = run?.config.schedule as { timesteps?: number } | undefined;
    const reused = run?.manifest.reusedTraining !== undefined;
    return [
      text(String(point.index)),
      ...axes.map((a) => text(formatValue(point.overrides[a]), "diff")),
      text(String(point.seed)),
      num(schedule?.timesteps),
      num(summary.sqrtAlphaBarT),
      seconds(summary.trainSeconds, reused),
      seconds(summary.sampleSeconds, false),
      ...columns.map((c) => metricCell(summary, c)),
      num(summary.finalLoss),
      `<td class="status-${e(run?.manifest.status ?? point.status)}">${
        e(run?.manifest.status ?? point.status)
      }</td>`,
      `<td>${runLink(model, sweep.runIds[i])}</td>`,
    ];
  });
  const head = [
    "point",
    ...axes.map((a) => `<code>${e(a)}</code>`),
    "seed",
    "T",
    "√ᾱ<sub>T</sub>",
    "training time",
    "sampling time",
    ...columns.map((c) => `${e(c.key)}${c.std ? " ± std" : ""}`),
    "final loss",
    "status",
    "run",
  ];
  // Repeated over seeds: the mean and spread per point, so a difference can be told from noise.
  const keys = [...columns.map((c) => c.key), "finalLoss"];
  const groups = seedMeans(
    index.points.map((point, i) => ({
      overrides: point.overrides,
      seed: point.seed,
      summary: runs[i]?.summary ?? {},
    })),
    keys,
  );
  const means = index.seeds.length < 2 ? "" : `<h3>Mean over seeds</h3>
${seedTable(groups, { axes, keys })}
<p class="meta">± is the sample standard deviation over the seeds (n − 1), not the metrics' own.</p>`;
  const charts = (model.sweepSvgs.get(sweep.path) ?? []).map(([title, svg]) =>
    `<figure>${svg}<figcaption>${e(title)}</figcaption></figure>`
  ).join("");
  const gallery = runs.map((run, i) => {
    if (!run?.images.includes("samples.png")) return "";
    return `<figure><img class="pictures" src="${e(model.imageSrc(run, "samples.png"))}"${
      scaledSize(run, "samples.png", 280)
    } alt="${e(`samples of point ${index.points[i].index}`)}"><figcaption>point ${
      index.points[i].index
    }: ${e(describePoint(index.points[i]))}</figcaption></figure>`;
  }).join("");
  return `<section class="sweep" id="sweep-${e(index.name)}" data-sweep="${e(index.name)}">
<h2>Sweep ${e(index.name)}</h2>
<p class="meta"><code>${e(index.file)}</code> · ${e(index.mode)} over ${
    axes.map((a) => `<code>${e(a)}</code> ∈ {${e(index.axes[a].map(formatValue).join(", "))}}`)
      .join(" × ") || "seeds"
  } · seeds ${e(index.seeds.join(", "))} · launcher ${e(index.launcher)}${
    index.sets.length ? ` · --set ${e(index.sets.join(" "))}` : ""
  }</p>
${table(head, rows, { cls: "answer" })}
<p class="meta">Training time is the recorded training wall time (for a point that reused the
training of another run, that run's); sampling time is the wall time of sampling alone.</p>
${means}
${charts ? `<div class="charts">${charts}</div>` : ""}
<h3>Samples</h3>
<div class="gallery">${gallery || "<p>no samples yet</p>"}</div>
</section>`;
}

function compareSection(model: PageModel): string {
  const { runs } = model;
  const heads = runs.map((r) => `<a href="#run-${e(r.id)}">${e(model.labels.get(r.id)!)}</a>`);
  const paths = differingPaths(runs.map((r) => r.config));
  const flat = runs.map((r) => flattenJson(r.config));
  const diffRows = paths.map((p) => [
    `<td><code>${e(p)}</code></td>`,
    ...flat.map((f) => text(formatValue(f.get(p)), "diff")),
  ]);
  const columns = metricColumns(runs.map((r) => r.summary));
  const metricRows = columns.map((c) => {
    const values = runs.map((r) => JSON.stringify(r.summary[c.key]));
    const differs = new Set(values).size > 1;
    return [
      `<td><code>${e(c.key)}</code>${c.std ? " ± std" : ""}</td>`,
      ...runs.map((r) =>
        metricCell(r.summary, c).replace(
          'class="num"',
          `class="num${differs ? " diff" : ""}"`,
        )
      ),
    ];
  });
  return `<section id="compare">
<h2>Runs compared</h2>
<h3>Config differences</h3>
${
    runs.length < 2
      ? "<p>one run: nothing to compare</p>"
      : paths.length === 0
      ? "<p>the configs are identical</p>"
      : table(["path", ...heads], diffRows, { cls: "config-diff" })
  }
<h3>Metrics (manifest summary)</h3>
${table(["metric", ...heads], metricRows, { cls: "metrics" })}
<h3>Loss curves</h3>
${model.lossSvg ? `<figure>${model.lossSvg}</figure>` : "<p>no metrics.jsonl</p>"}
</section>`;
}

function runSection(model: PageModel, run: ReportRun, differing: Set<string>): string {
  const m = run.manifest;
  const facts = [
    ["folder", run.dir],
    ["status", m.status + (m.error ? `: ${m.error}` : "")],
    ["seed", String(m.seed)],
    ["config hash", m.configHash],
    ["experiment file", m.source.file],
    ["overrides", m.source.overrides.join(" ") || "-"],
    ["backend", String(m.backend.name ?? "-")],
    ["started", m.startedAt],
    ["ended", m.endedAt ?? "-"],
    ...(m.reusedTraining ? [["reused training of", m.reusedTraining.dir]] : []),
  ];
  const images = run.images.map((name) => {
    const [w, h] = run.sizes.get(name) ?? [0, 0];
    return `<figure><img class="pictures" src="${e(model.imageSrc(run, name))}"${
      scaledSize(run, name, 400)
    } alt="${e(`${name} of ${run.id}`)}"><figcaption>${e(name)}${
      w > 0 ? ` (${w}x${h} px)` : ""
    }</figcaption></figure>`;
  }).join("");
  const config = [...flattenJson(run.config)].map(([path, value]) =>
    `<tr${differing.has(path) ? ' class="diff"' : ""}><td><code>${e(path)}</code></td>` +
    `<td class="value">${e(formatValue(value))}</td></tr>`
  ).join("");
  return `<section class="run" id="run-${e(run.id)}" data-run="${e(run.id)}">
<h2>${e(model.labels.get(run.id)!)} <small class="meta">${e(run.id)}</small></h2>
<table class="facts"><tbody>${
    facts.map(([k, v]) => `<tr><th>${e(k)}</th>${text(v)}</tr>`).join("")
  }</tbody></table>
<div class="gallery">${images || "<p>no pictures</p>"}</div>
<details><summary>resolved config (differences from the other runs highlighted)</summary>
<table class="config"><tbody>${config}</tbody></table></details>
</section>`;
}

/** The whole page. */
export function renderPage(model: PageModel): string {
  const differing = new Set(differingPaths(model.runs.map((r) => r.config)));
  const nav = [
    ...model.sweeps.map((s) => `<a href="#sweep-${e(s.index.name)}">sweep ${e(s.index.name)}</a>`),
    `<a href="#compare">runs compared</a>`,
    ...model.runs.map((r) => `<a href="#run-${e(r.id)}">${e(model.labels.get(r.id)!)}</a>`),
  ].join("");
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>ddpm-lab report: ${
    e(model.runs.map((r) => r.manifest.name).filter((n, i, a) => a.indexOf(n) === i).join(", "))
  }</title>
<style>${CSS}</style></head>
<body>
<h1>ddpm-lab report</h1>
<p class="meta">${model.runs.length} run(s), ${model.sweeps.length} sweep(s); written ${
    e(model.generatedAt)
  } by <code>deno task report</code>. Charts are rendered into the page; it needs no server.</p>
<nav>${nav}</nav>
${model.sweeps.map((s) => sweepSection(model, s)).join("\n")}
${compareSection(model)}
${model.runs.map((r) => runSection(model, r, differing)).join("\n")}
</body></html>
`;
}
