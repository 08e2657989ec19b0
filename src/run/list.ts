/**
 * `runs`: the run folders under an outputs root, one line each.
 * @module
 */
import { join } from "node:path";
import { UserError } from "../errors.ts";
import { LOSS_NAME } from "./logs.ts";
import { type Manifest, readManifest } from "./manifest.ts";

/** One run folder and its manifest. */
export interface RunEntry {
  /** The run folder. */
  dir: string;
  /** Its manifest. */
  manifest: Manifest;
}

/** Every run folder `<root>/<name>/<run>/` with a readable manifest, in path order. */
export async function listRuns(root: string): Promise<RunEntry[]> {
  const dirs = async (path: string): Promise<string[]> => {
    const out: string[] = [];
    try {
      for await (const e of Deno.readDir(path)) {
        if (e.isDirectory && !e.name.startsWith(".")) out.push(e.name);
      }
    } catch {
      // no such folder: no runs
    }
    return out.sort();
  };
  const entries: RunEntry[] = [];
  for (const name of await dirs(root)) {
    for (const run of await dirs(join(root, name))) {
      const dir = join(root, name, run);
      const manifest = await readManifest(dir);
      if (manifest) entries.push({ dir, manifest });
    }
  }
  return entries;
}

/**
 * {@linkcode listRuns}, for the command line: a `root` that does not exist or is not a folder is
 * a {@linkcode UserError}.
 */
export async function listRunsAt(root: string): Promise<RunEntry[]> {
  const info = await Deno.stat(root).catch(() => null);
  if (!info?.isDirectory) {
    throw new UserError(`${root}: ${info ? "not a folder" : "no such folder"}`, {
      expected: "an outputs folder holding run folders (default: outputs)",
    });
  }
  return await listRuns(root);
}

/**
 * The runs as an aligned text table: name, seed, hash, status, steps, loss (the mean of the last
 * steps, as the progress lines show it), date, overrides and folder; a note names the loss.
 */
export function formatRunTable(entries: RunEntry[]): string {
  // sample-quality metrics (kid_iv3m5, fid_iv3m5, judge_tv...) of any run get a column
  const quality = [
    ...new Set(entries.flatMap(({ manifest: m }) => Object.keys(m.summary))),
  ].filter((k) => /^(kid|fid)(_[a-z0-9]+)?$/.test(k) || k === "judge_tv").sort();
  const rows = [[
    "name",
    "seed",
    "hash",
    "status",
    "steps",
    "loss*",
    ...quality,
    "started",
    "overrides",
    "folder",
  ]];
  for (const { dir, manifest: m } of entries) {
    const loss = m.summary.lossMean50;
    const overrides = m.source.overrides.filter((o) => !o.startsWith("seed="));
    const q = quality.map((k) => {
      const v = m.summary[k];
      return typeof v === "number" ? v.toPrecision(4) : "-";
    });
    rows.push([
      m.name,
      String(m.seed),
      m.configHash.slice(0, 8),
      m.status + (m.reusedTraining ? " (reused)" : ""),
      String(m.summary.steps ?? "-"),
      typeof loss === "number" ? loss.toFixed(4) : "-",
      ...q,
      m.startedAt.slice(0, 16).replace("T", " "),
      overrides.length ? overrides.join(" ") : "-",
      dir,
    ]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const table = rows.map((r) => r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd());
  return [...table, "", `* loss: training loss, ${LOSS_NAME} (lossMean50 in manifest.json)`]
    .join("\n");
}
