/**
 * `loss.png`: the training loss per step with a smoothed line, and the evaluation metrics per
 * epoch when there are any. Drawn with Vega-Lite (compiled to Vega, rendered to SVG without a
 * browser) and rasterised by sharp; the same numbers give the same bytes.
 * @module
 */
import * as vega from "vega";
import * as vl from "vega-lite";
import sharp from "sharp";
import { writeFileAtomic } from "./files.ts";

/** One training step of metrics.jsonl. */
export interface LossPoint {
  /** Optimizer step. */
  step: number;
  /** Loss of the step. */
  loss: number;
}

/** One evaluation of eval.jsonl: its epoch and metric values. */
export interface EvalPoint {
  /** Epoch after which the evaluation ran (1-based). */
  epoch: number;
  /** Metric values by name (e.g. `kid_iv3m5`, `fid_iv3m5`). */
  values: Record<string, number>;
}

/** Steps each side of the centred moving average of the smoothed line (about 2% of the run). */
function smoothingWindow(steps: number): number {
  return Math.max(1, Math.round(steps / 50));
}

/** The Vega-Lite spec of the figure. */
export function lossPlotSpec(losses: LossPoint[], evals: EvalPoint[] = []): vl.TopLevelSpec {
  const half = smoothingWindow(losses.length);
  const lossChart: Record<string, unknown> = {
    title: `training loss (light: per step; dark: centred mean of ${2 * half + 1} steps)`,
    width: 640,
    height: 260,
    data: { values: losses.map(({ step, loss }) => ({ step, loss })) },
    layer: [
      {
        mark: { type: "line", opacity: 0.35, color: "#4c78a8", strokeWidth: 1 },
        encoding: {
          x: {
            field: "step",
            type: "quantitative",
            title: "step",
            axis: { format: "d", tickMinStep: 1 },
          },
          y: { field: "loss", type: "quantitative", title: "loss", scale: { zero: false } },
        },
      },
      {
        transform: [{
          window: [{ op: "mean", field: "loss", as: "smoothed" }],
          frame: [-half, half],
        }],
        mark: { type: "line", color: "#d62728", strokeWidth: 2 },
        encoding: {
          x: { field: "step", type: "quantitative" },
          y: { field: "smoothed", type: "quantitative" },
        },
      },
    ],
  };
  const names = [...new Set(evals.flatMap((e) => Object.keys(e.values)))].sort();
  const metricCharts: Record<string, unknown>[] = names.map((name) => ({
    title: name,
    width: 640 / Math.max(1, names.length) - 40,
    height: 160,
    data: {
      values: evals.filter((e) => Number.isFinite(e.values[name])).map((e) => ({
        epoch: e.epoch,
        value: e.values[name],
      })),
    },
    layer: [
      {
        mark: { type: "line", point: true, color: "#2ca02c" },
        encoding: {
          x: { field: "epoch", type: "quantitative", title: "epoch", axis: { tickMinStep: 1 } },
          y: { field: "value", type: "quantitative", title: name, scale: { zero: false } },
        },
      },
    ],
  }));
  const base = { background: "white", config: { font: "DejaVu Sans" } };
  if (metricCharts.length === 0) return { ...base, ...lossChart } as unknown as vl.TopLevelSpec;
  return {
    ...base,
    vconcat: [lossChart, { hconcat: metricCharts }],
  } as unknown as vl.TopLevelSpec;
}

/** The figure as SVG text. */
export async function lossPlotSvg(losses: LossPoint[], evals: EvalPoint[] = []): Promise<string> {
  const compiled = vl.compile(lossPlotSpec(losses, evals)).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** The figure as PNG bytes. */
export async function lossPlotPng(
  losses: LossPoint[],
  evals: EvalPoint[] = [],
): Promise<Uint8Array> {
  const svg = await lossPlotSvg(losses, evals);
  const buffer = await sharp(new TextEncoder().encode(svg)).png({ compressionLevel: 6 })
    .toBuffer();
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

async function readJsonLines(path: string): Promise<Record<string, unknown>[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch {
    return [];
  }
  return text.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l));
}

/**
 * Writes `loss.png` of a run folder from its `metrics.jsonl` and `eval.jsonl` (the numeric
 * top-level metrics of each line, `_std` values left out). Does nothing when there are no losses.
 */
export async function writeLossPlot(
  runDir: string,
  options: { out?: string } = {},
): Promise<boolean> {
  const losses = (await readJsonLines(`${runDir}/metrics.jsonl`))
    .filter((r) =>
      typeof r.step === "number" && typeof r.loss === "number"
    ) as unknown as LossPoint[];
  if (losses.length === 0) return false;
  const evals: EvalPoint[] = (await readJsonLines(`${runDir}/eval.jsonl`)).map((r) => ({
    epoch: Number(r.epoch),
    values: Object.fromEntries(
      Object.entries(r.metrics as Record<string, unknown> ?? {}).filter(([k, v]) =>
        typeof v === "number" && !k.endsWith("_std")
      ),
    ) as Record<string, number>,
  }));
  await writeFileAtomic(options.out ?? `${runDir}/loss.png`, await lossPlotPng(losses, evals));
  return true;
}
