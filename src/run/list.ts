/**
 * `runs`: the run folders under an outputs root, one line each.
 * @module
 */
import { join } from "node:path";
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
 * The runs as an aligned text table: name, seed, hash, status, steps, final loss, the
 * sample-quality metrics any of them has, date.
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
    "final loss",
    ...quality,
    "started",
    "folder",
  ]];
  for (const { dir, manifest: m } of entries) {
    const loss = m.summary.finalLoss;
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
      dir,
    ]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd()).join("\n");
}
