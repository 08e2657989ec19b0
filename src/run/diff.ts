/**
 * `diff`: what differs between two run folders: config paths, summary metrics, and artifacts
 * (byte-identical or not; for images, mean absolute difference, PSNR and a composite
 * A | B | |A - B| heat map).
 * @module
 */
import diff from "microdiff";
import { join } from "node:path";
import { UserError } from "../errors.ts";
import { decodePng, type RasterImage, writePng } from "../io/image.ts";
import { captionComposite } from "./captions.ts";
import { type ArtifactStatus, compareArtifacts, type Manifest, readManifest } from "./manifest.ts";

/** One differing config path. */
export interface ConfigChange {
  /** Dotted JSON path. */
  path: string;
  /** Value in A (absent when only B has it). */
  a?: unknown;
  /** Value in B (absent when only A has it). */
  b?: unknown;
}

/** One summary number of both runs. */
export interface MetricRow {
  /** Metric name (summary key, or `wallSeconds`). */
  name: string;
  /** Value in A. */
  a: number | null;
  /** Value in B. */
  b: number | null;
}

/** One artifact of either run. */
export interface ArtifactRow {
  /** Path relative to the run folder. */
  path: string;
  /** `identical`, `differs`, `only-a` or `only-b`. */
  status: ArtifactStatus;
  /** For images: pixel comparison (null when the sizes differ). */
  image?: { width: number; height: number; meanAbsDiff: number; psnr: number } | null;
  /** The composite written, if any. */
  composite?: string;
}

/** The result of {@link diffRuns}. */
export interface RunDiff {
  /** The two run folders. */
  a: string;
  /** The second run folder. */
  b: string;
  /** Differing config paths. */
  config: ConfigChange[];
  /** Summary metrics side by side. */
  metrics: MetricRow[];
  /** Deterministic artifacts of either run. */
  artifacts: ArtifactRow[];
  /** True when every deterministic artifact is byte-identical. */
  identical: boolean;
}

async function loadRun(dir: string): Promise<{ manifest: Manifest; config: unknown }> {
  const manifest = await readManifest(dir);
  if (manifest === null) {
    throw new UserError(`${dir} is not a run folder (no readable manifest.json)`, {
      expected: "a folder written by `deno task run`, e.g. outputs/<name>/seed-<seed>-<hash>",
    });
  }
  const config = JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
  return { manifest, config };
}

/** The summary numbers of a run's eval.json (written by `deno task eval`), if any. */
async function evalSummary(dir: string): Promise<Record<string, number>> {
  try {
    const e = JSON.parse(await Deno.readTextFile(join(dir, "eval.json")));
    return e.summary ?? {};
  } catch {
    return {};
  }
}

function wallSeconds(m: Manifest): number | null {
  if (!m.endedAt) return null;
  return +((Date.parse(m.endedAt) - Date.parse(m.startedAt)) / 1000).toFixed(1);
}

/** Mean absolute difference (0-255 scale) and PSNR (dB) of two same-size images. */
export function compareImages(
  a: Required<RasterImage>,
  b: Required<RasterImage>,
): { meanAbsDiff: number; psnr: number } {
  let abs = 0;
  let sq = 0;
  for (let i = 0; i < a.data.length; i++) {
    const d = a.data[i] - b.data[i];
    abs += Math.abs(d);
    sq += d * d;
  }
  const mse = sq / a.data.length;
  return {
    meanAbsDiff: abs / a.data.length,
    psnr: mse === 0 ? Infinity : 10 * Math.log10((255 * 255) / mse),
  };
}

/** The 'hot' colour map on t in [0, 1]: black, red, yellow, white. */
function hot(t: number): [number, number, number] {
  const c = (v: number) => Math.round(255 * Math.min(1, Math.max(0, v)));
  return [c(3 * t), c(3 * t - 1), c(3 * t - 2)];
}

/**
 * A | B (| heat map of the per-pixel mean |A - B| over channels, full scale (white) at the
 * largest difference, `scale`, at least 1 of 255) side by side with a 4-pixel white gap, as RGB;
 * the heat map only when the sizes match.
 */
export function composite(
  a: Required<RasterImage>,
  b: Required<RasterImage>,
): { width: number; height: number; data: Uint8Array; scale?: number } {
  const gap = 4;
  const same = a.width === b.width && a.height === b.height;
  const panels = same ? 3 : 2;
  const width = a.width + b.width + (same ? a.width : 0) + gap * (panels - 1);
  const height = Math.max(a.height, b.height);
  const data = new Uint8Array(width * height * 3).fill(255);
  const blit = (img: Required<RasterImage>, x0: number) => {
    for (let y = 0; y < img.height; y++) {
      for (let x = 0; x < img.width; x++) {
        for (let c = 0; c < 3; c++) {
          const src = (y * img.width + x) * img.channels + Math.min(c, img.channels - 1);
          data[(y * width + x0 + x) * 3 + c] = img.data[src];
        }
      }
    }
  };
  blit(a, 0);
  blit(b, a.width + gap);
  if (!same) return { width, height, data };
  const x0 = 2 * (a.width + gap);
  const diffs = new Float32Array(a.width * a.height);
  for (let p = 0; p < diffs.length; p++) {
    let d = 0;
    for (let c = 0; c < 3; c++) {
      const i = p * a.channels + Math.min(c, a.channels - 1);
      d += Math.abs(a.data[i] - b.data[i]) / 3;
    }
    diffs[p] = d;
  }
  const scale = Math.max(1, Math.ceil(diffs.reduce((m, d) => Math.max(m, d), 0)));
  for (let y = 0; y < a.height; y++) {
    for (let x = 0; x < a.width; x++) {
      data.set(hot(diffs[y * a.width + x] / scale), (y * width + x0 + x) * 3);
    }
  }
  return { width, height, data, scale };
}

/** Compares run folders `a` and `b`; writes image composites under `options.out` when given. */
export async function diffRuns(
  a: string,
  b: string,
  options: { out?: string } = {},
): Promise<RunDiff> {
  const runA = await loadRun(a);
  const runB = await loadRun(b);
  const config = diff(
    runA.config as Record<string, unknown>,
    runB.config as Record<string, unknown>,
  )
    .map((d): ConfigChange => {
      const path = d.path.join(".");
      if (d.type === "CREATE") return { path, b: d.value };
      if (d.type === "REMOVE") return { path, a: d.oldValue };
      return { path, a: d.oldValue, b: d.value };
    });
  const ma = runA.manifest;
  const mb = runB.manifest;
  const numeric = (v: unknown) => (typeof v === "number" ? v : null);
  const metricNames = [...new Set([...Object.keys(ma.summary), ...Object.keys(mb.summary)])];
  const metrics: MetricRow[] = metricNames
    .map((name) => ({ name, a: numeric(ma.summary[name]), b: numeric(mb.summary[name]) }))
    .filter((r) => r.a !== null || r.b !== null);
  metrics.push({ name: "wallSeconds", a: wallSeconds(ma), b: wallSeconds(mb) });
  // `deno task eval` results (eval.json, not an artifact of the run)
  const ea = await evalSummary(a);
  const eb = await evalSummary(b);
  for (const name of [...new Set([...Object.keys(ea), ...Object.keys(eb)])]) {
    metrics.push({ name: `eval.json ${name}`, a: ea[name] ?? null, b: eb[name] ?? null });
  }

  if (options.out) await Deno.mkdir(options.out, { recursive: true });
  const artifacts: ArtifactRow[] = [];
  for (const { path, status } of compareArtifacts(ma.artifacts, mb.artifacts)) {
    const row: ArtifactRow = { path, status };
    if (path.endsWith(".png") && (status === "identical" || status === "differs")) {
      const ia = await decodePng(await Deno.readFile(join(a, path)));
      const ib = await decodePng(await Deno.readFile(join(b, path)));
      const sameSize = ia.width === ib.width && ia.height === ib.height;
      row.image = sameSize
        ? { width: ia.width, height: ia.height, ...compareImages(ia, ib) }
        : null;
      if (options.out) {
        row.composite = join(options.out, path.replaceAll("/", "_").replace(/\.png$/, "-diff.png"));
        const image = composite(ia, ib);
        const panels = [{ x: 0, name: "A" }, { x: ia.width + 4, name: "B" }];
        if (image.scale !== undefined) panels.push({ x: 2 * (ia.width + 4), name: "|A−B|" });
        await writePng(
          row.composite,
          await captionComposite(image, { panels, scale: image.scale }),
        );
      }
    }
    artifacts.push(row);
  }
  return {
    a,
    b,
    config,
    metrics,
    artifacts,
    identical: artifacts.every((r) => r.status === "identical"),
  };
}

const show = (v: unknown): string => (v === undefined ? "(absent)" : JSON.stringify(v));

function fmt(v: number | null): string {
  if (v === null) return "-";
  if (!Number.isFinite(v)) return String(v);
  return Math.abs(v) >= 1000 || Number.isInteger(v) ? String(v) : v.toPrecision(4);
}

/** The human-readable report of a {@link RunDiff}. */
export function formatRunDiff(d: RunDiff): string {
  const lines = [`A: ${d.a}`, `B: ${d.b}`, "", "config:"];
  if (d.config.length === 0) lines.push("  (identical)");
  for (const c of d.config) lines.push(`  ${c.path}: ${show(c.a)} -> ${show(c.b)}`);
  lines.push("", "metrics:                     A            B       change");
  for (const m of d.metrics) {
    const change = m.a !== null && m.b !== null && Number.isFinite(m.a) && Number.isFinite(m.b)
      ? `${m.b - m.a >= 0 ? "+" : ""}${fmt(m.b - m.a)}` +
        (m.a !== 0 ? ` (${(100 * (m.b - m.a) / Math.abs(m.a)).toFixed(1)}%)` : "")
      : "";
    lines.push(
      `  ${m.name.padEnd(22)} ${fmt(m.a).padStart(12)} ${fmt(m.b).padStart(12)}   ${change}`,
    );
  }
  lines.push("", "artifacts:");
  for (const r of d.artifacts) {
    let extra = "";
    if (r.image) {
      const psnr = Number.isFinite(r.image.psnr) ? `${r.image.psnr.toFixed(2)} dB` : "inf";
      extra = `  mean |A-B| ${r.image.meanAbsDiff.toFixed(2)}/255, PSNR ${psnr}`;
    } else if (r.image === null) extra = "  (different sizes: compared side by side only)";
    if (r.composite) extra += `  -> ${r.composite}`;
    lines.push(`  ${r.status.padEnd(9)} ${r.path}${extra}`);
  }
  lines.push("", d.identical ? "identical in every artifact" : "the runs differ");
  return lines.join("\n");
}
