/**
 * Charts of a report, rendered to SVG when the report is written (Vega-Lite compiled to Vega,
 * drawn headless with `renderer: "none"`), so the page needs no script and works offline.
 * @module
 */
import * as vega from "vega";
import * as vl from "vega-lite";

/** Renders a Vega-Lite spec to an SVG string. */
export async function vegaLiteSvg(spec: vl.TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Training loss of every run against the step, one colour per run. */
export async function lossChart(
  series: readonly { label: string; points: readonly { step: number; loss: number }[] }[],
  options: { window: number },
): Promise<string> {
  const values = series.flatMap((s) => s.points.map((p) => ({ ...p, run: s.label })));
  return await vegaLiteSvg({
    width: 640,
    height: 280,
    data: { values },
    mark: { type: "line", strokeWidth: 1.5 },
    encoding: {
      x: { field: "step", type: "quantitative", title: "training step" },
      y: {
        field: "loss",
        type: "quantitative",
        title: `loss (mean of the last ${options.window} steps)`,
        scale: { zero: false },
      },
      color: {
        field: "run",
        type: "nominal",
        title: "run",
        sort: null,
        legend: { labelLimit: 400 },
      },
    },
  });
}

/** A metric against a swept numeric value: one point per run, the mean joined by a line. */
export async function sweepChart(
  rows: readonly { x: number; y: number }[],
  options: { x: string; y: string },
): Promise<string> {
  return await vegaLiteSvg({
    width: 320,
    height: 200,
    data: { values: rows as { x: number; y: number }[] },
    layer: [
      {
        mark: { type: "line", point: false },
        encoding: {
          x: { field: "x", type: "quantitative", title: options.x },
          y: { aggregate: "mean", field: "y", type: "quantitative", title: options.y },
        },
      },
      {
        mark: { type: "point", filled: true },
        encoding: {
          x: { field: "x", type: "quantitative" },
          y: { field: "y", type: "quantitative", scale: { zero: false } },
        },
      },
    ],
  });
}
