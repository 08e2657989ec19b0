/**
 * What a report shows, read from disk: run folders (manifest, config, metrics, pictures) given
 * directly, through a sweep's `sweep.json`, or as an experiment folder of runs.
 * @module
 */
import { basename, join, resolve } from "node:path";
import { UserError } from "../errors.ts";
import { type Manifest, readManifest } from "../run/manifest.ts";
import { indexedPath, readIndex, type SweepIndex } from "../sweep/sweep_index.ts";

/** The pictures a run folder may hold, in the order a report shows them. */
export const RUN_IMAGES: readonly string[] = [
  "samples.png",
  "trajectory.gif",
  "trajectory.png",
  "recovery.png",
  "forward.png",
];

/** One run of a report. */
export interface ReportRun {
  /** A short id, unique in the report (`<name>-seed-<seed>-<hash8>`). */
  id: string;
  /** The run folder (absolute). */
  dir: string;
  /** Its manifest. */
  manifest: Manifest;
  /**
   * The manifest's summary, plus the `<metric>_std` of the final evaluation in eval.jsonl that
   * the summary leaves out (so that KID shows with its ± std).
   */
  summary: Record<string, number | string | null>;
  /** Its resolved config (config.json). */
  config: Record<string, unknown>;
  /** Its training loss per step (metrics.jsonl). */
  losses: { step: number; loss: number }[];
  /** The pictures of {@link RUN_IMAGES} it has. */
  images: string[];
  /** Pixel width and height of each picture, by name. */
  sizes: Map<string, [number, number]>;
}

/** Width and height of a PNG or GIF from its header, or null for another format. */
export function imageSize(bytes: Uint8Array): [number, number] | null {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length >= 24 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47) {
    return [view.getUint32(16), view.getUint32(20)];
  }
  if (bytes.length >= 10 && bytes[0] === 0x47 && bytes[1] === 0x49 && bytes[2] === 0x46) {
    return [view.getUint16(6, true), view.getUint16(8, true)];
  }
  return null;
}

/** A sweep of a report: its index and, for each point, the id of its run (null: no run yet). */
export interface ReportSweep {
  /** Path of sweep.json. */
  path: string;
  /** The index, as last written. */
  index: SweepIndex;
  /** Run id of each point, in point order. */
  runIds: (string | null)[];
}

/** Everything a report is made of. */
export interface ReportInputs {
  /** Every run, in the order given (sweep points in point order), each once. */
  runs: ReportRun[];
  /** Every sweep given. */
  sweeps: ReportSweep[];
}

/**
 * The `<metric>_std` values of the final evaluation of an eval.jsonl text (its last line with
 * `"final": true`, else its last line), read from that line's `metrics`.
 */
export function finalEvaluationStd(text: string): Record<string, number> {
  const lines = text.split("\n").filter((l) => l.trim() !== "").flatMap((l) => {
    try {
      return [JSON.parse(l)];
    } catch {
      return [];
    }
  });
  const last = lines.findLast((l) => l?.final === true) ?? lines.at(-1);
  const out: Record<string, number> = {};
  for (const [key, value] of Object.entries(last?.metrics ?? {})) {
    if (key.endsWith("_std") && typeof value === "number") out[key] = value;
  }
  return out;
}

async function readRun(dir: string, manifest: Manifest): Promise<ReportRun> {
  const config = JSON.parse(await Deno.readTextFile(join(dir, "config.json")).catch(() => "{}"));
  const text = await Deno.readTextFile(join(dir, "metrics.jsonl")).catch(() => "");
  const losses = text.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l))
    .filter((m) => Number.isFinite(m.step) && Number.isFinite(m.loss))
    .map((m) => ({ step: m.step as number, loss: m.loss as number }));
  const images: string[] = [];
  const sizes = new Map<string, [number, number]>();
  for (const name of RUN_IMAGES) {
    const bytes = await Deno.readFile(join(dir, name)).catch(() => null);
    if (bytes === null) continue;
    images.push(name);
    const size = imageSize(bytes);
    if (size) sizes.set(name, size);
  }
  const id = `${manifest.name}-seed-${manifest.seed}-${manifest.configHash.slice(0, 8)}`;
  const summary = {
    ...finalEvaluationStd(await Deno.readTextFile(join(dir, "eval.jsonl")).catch(() => "")),
    ...manifest.summary,
  };
  return { id, dir, manifest, summary, config, losses, images, sizes };
}

/**
 * The run folders (with a manifest) and sweeps (`sweep.json`) below `dir` at any depth, in path
 * order; a run folder's own subfolders (`checkpoint/`, `samples/`) and hidden folders are not
 * searched.
 */
async function findBelow(dir: string): Promise<{ runs: string[]; sweeps: string[] }> {
  const found = { runs: [] as string[], sweeps: [] as string[] };
  const walk = async (folder: string): Promise<void> => {
    const names: string[] = [];
    try {
      for await (const entry of Deno.readDir(folder)) {
        if (entry.isDirectory && !entry.name.startsWith(".")) names.push(entry.name);
        else if (entry.isFile && entry.name === "sweep.json") found.sweeps.push(folder);
      }
    } catch {
      return; // unreadable: nothing below it
    }
    for (const name of names.sort()) {
      const child = join(folder, name);
      if (await readManifest(child)) found.runs.push(child);
      else await walk(child);
    }
  };
  await walk(dir);
  return found;
}

/**
 * Reads the runs and sweeps named by `paths`: a run folder, a sweep (`sweep.json` or its folder)
 * or a folder holding run folders at any depth (`outputs/q1-t100`, `outputs`: the sweeps found
 * there count as sweeps). Throws a {@linkcode UserError} for a path that holds no run.
 */
export async function collectInputs(paths: readonly string[]): Promise<ReportInputs> {
  const runs: ReportRun[] = [];
  const sweeps: ReportSweep[] = [];
  const byDir = new Map<string, ReportRun>();
  const addRun = async (dir: string): Promise<ReportRun | null> => {
    const real = await Deno.realPath(dir).catch(() => resolve(dir));
    const known = byDir.get(real);
    if (known) return known;
    const manifest = await readManifest(real);
    if (!manifest) return null;
    const run = await readRun(real, manifest);
    byDir.set(real, run);
    runs.push(run);
    return run;
  };
  const addSweep = async (sweep: { index: SweepIndex; path: string }): Promise<void> => {
    const path = resolve(sweep.path);
    if (sweeps.some((s) => resolve(s.path) === path)) return;
    const runIds: (string | null)[] = [];
    for (const point of sweep.index.points) {
      runIds.push((await addRun(indexedPath(sweep.path, point.run)))?.id ?? null);
    }
    sweeps.push({ path: sweep.path, index: sweep.index, runIds });
  };
  for (const path of paths) {
    const stat = await Deno.stat(path).catch(() => null);
    if (stat === null) {
      throw new UserError(`${path}: no such file or folder`, {
        expected: "run folders, sweeps (sweep.json or its folder) or folders of runs",
      });
    }
    const sweep = await readIndex(path);
    if (sweep) {
      await addSweep(sweep);
      continue;
    }
    if (stat.isDirectory && await addRun(path)) continue;
    // A folder holding runs at any depth (`outputs`, `outputs/q1-t100`), sweeps among them.
    const below = stat.isDirectory ? await findBelow(path) : { runs: [], sweeps: [] };
    if (below.runs.length === 0) {
      throw new UserError(`${path}: not a run folder, a sweep or a folder that holds runs`, {
        expected: `a folder with manifest.json or sweep.json, or run folders below it ` +
          `(got ${basename(path)})`,
      });
    }
    for (const folder of below.sweeps) {
      const found = await readIndex(folder);
      if (found) await addSweep(found);
    }
    for (const run of below.runs) await addRun(run);
  }
  return { runs, sweeps };
}
