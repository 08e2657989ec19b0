/**
 * Loading experiment files: JSON parsing with line and column errors, `extends` chains,
 * `--set` and `--seed` overrides, validation against the experiment schema with errors naming
 * the file (or flag) and the JSON path, plus the summary and hash of a resolved experiment.
 *
 * Layers, lowest first: the root `extends` ancestor, ..., the experiment file, each `--set` in
 * order, then `--seed`. Objects merge deeply (the later layer wins), arrays are replaced whole,
 * and a section whose `kind` changes is replaced rather than merged.
 * @module
 */
import { dirname, resolve } from "node:path";
import {
  type Experiment,
  ExperimentFileSchema,
  ExperimentSchema,
} from "../../schemas/experiment.ts";
import { UserError } from "../errors.ts";
import { issuesError } from "./issues.ts";
import { parseJsonText } from "./json.ts";
import { hasPath, isJsonObject, type JsonObject, mergeLayers } from "./merge.ts";
import { checkSetPath, overrideLayer, parseSetOverride } from "./overrides.ts";

export { canonicalJson, configHash } from "./canonical.ts";
export { formatConfigSummary } from "./summary.ts";

/** Overrides applied on top of the experiment file. */
export interface LoadOptions {
  /** `path=value` overrides (`--set`), applied in order. */
  sets?: string[];
  /** Overrides `seed` (`--seed`), applied last. */
  seed?: number;
}

/** A resolved experiment and where it came from. */
export interface LoadedExperiment {
  /** The validated experiment, defaults filled in, `dataset.path` absolute. */
  config: Experiment;
  /** The absolute path of the experiment file. */
  file: string;
  /** Absolute paths: the experiment file first, then its `extends` ancestors in order. */
  chain: string[];
  /** The overrides as applied: each `--set` string, then `seed=N` when a seed was given. */
  overrides: string[];
}

interface Layer {
  /** The file, or the flag as written (`--set train.epochs=3`, `--seed 7`). */
  source: string;
  data: JsonObject;
}

/**
 * Loads, merges and validates an experiment file. Throws a {@linkcode UserError} naming the
 * file or flag and the JSON path for invalid JSON, unknown keys, wrong types or values, a
 * missing or cyclic `extends` and unknown `--set` paths; all validation problems of the merged
 * experiment are reported together, one per line.
 */
export async function loadExperiment(
  path: string,
  options: LoadOptions = {},
): Promise<LoadedExperiment> {
  const file = resolve(path);
  const { chain, layers } = await loadChain(file);
  let merged: JsonObject = {};
  for (const layer of layers) merged = mergeLayers(merged, layer.data) as JsonObject;

  const overrides: string[] = [];
  for (const text of options.sets ?? []) {
    const override = parseSetOverride(text);
    checkSetPath(override, merged);
    const { layer, start } = overrideLayer(override, merged);
    resolveDatasetPath(layer, Deno.cwd());
    layers.push({ source: override.flag, data: layer });
    merged = mergeLayers(start, layer) as JsonObject;
    overrides.push(text);
  }
  if (options.seed !== undefined) {
    const layer = { seed: options.seed };
    layers.push({ source: `--seed ${options.seed}`, data: layer });
    merged = mergeLayers(merged, layer) as JsonObject;
    overrides.push(`seed=${options.seed}`);
  }

  const parsed = ExperimentSchema.safeParse(merged);
  if (!parsed.success) {
    throw issuesError(parsed.error.issues, merged, {
      schema: ExperimentSchema,
      sourceOf: (issuePath) => sourceOf(layers, issuePath) ?? file,
      file,
    });
  }
  return { config: parsed.data, file, chain, overrides };
}

/** The file and its ancestors (child first), and their layers (root ancestor first). */
async function loadChain(file: string): Promise<{ chain: string[]; layers: Layer[] }> {
  const chain: string[] = [];
  const layers: Layer[] = [];
  const seen = new Map<string, string>(); // real path -> path as resolved
  let current = file;
  let extendedBy: string | undefined;
  while (true) {
    const real = await realPathOf(current, extendedBy);
    if (seen.has(real) && extendedBy !== undefined) {
      const cycle = [...chain.slice(chain.indexOf(seen.get(real)!)), current];
      throw new UserError(`extends cycle: ${cycle.join(" -> ")}`, {
        file: extendedBy,
        path: "extends",
      });
    }
    seen.set(real, current);
    chain.push(current);
    const data = await readExperimentFile(current);
    // `sweep` and `launcher` say how to run points of the file (src/sweep), not what a run is.
    const { extends: parent, $schema: _schema, sweep: _sweep, launcher: _launcher, ...rest } = data;
    resolveDatasetPath(rest, dirname(current));
    layers.unshift({ source: current, data: rest });
    if (typeof parent !== "string") return { chain, layers };
    extendedBy = current;
    current = resolve(dirname(current), parent);
  }
}

async function realPathOf(file: string, extendedBy: string | undefined): Promise<string> {
  try {
    return await Deno.realPath(file);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw readError(file, error);
    if (extendedBy === undefined) throw new UserError("experiment file not found", { file });
    throw new UserError(`extends target does not exist: ${file}`, {
      file: extendedBy,
      path: "extends",
      expected: "a path relative to this file",
    });
  }
}

/** Reads, parses and validates one experiment file on its own. */
async function readExperimentFile(file: string): Promise<JsonObject> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (error) {
    throw readError(file, error);
  }
  const data = parseJsonText(text, file);
  const result = ExperimentFileSchema.safeParse(data);
  if (!result.success) {
    throw issuesError(result.error.issues, data, {
      schema: ExperimentFileSchema,
      sourceOf: () => file,
      file,
    });
  }
  if (!isJsonObject(data)) throw new UserError("expected a JSON object", { file });
  return data;
}

function readError(file: string, error: unknown): UserError {
  const reason = error instanceof Error ? error.message : String(error);
  return new UserError(`cannot read the experiment file: ${reason}`, { file });
}

/** Makes a relative `dataset.path` of a layer absolute, relative to `baseDir`. */
function resolveDatasetPath(layer: JsonObject, baseDir: string): void {
  const dataset = layer.dataset;
  if (isJsonObject(dataset) && typeof dataset.path === "string" && dataset.path !== "") {
    dataset.path = resolve(baseDir, dataset.path);
  }
}

/**
 * The layer an issue at `path` comes from: the latest layer that has the path, else the latest
 * that has its longest present prefix (a missing `dataset.path` comes from the layer that set
 * `dataset`). Undefined when no layer has any of it (a default, or a missing `name`).
 */
function sourceOf(layers: readonly Layer[], path: readonly PropertyKey[]): string | undefined {
  for (let length = path.length; length >= 1; length--) {
    const prefix = path.slice(0, length);
    const layer = layers.findLast((candidate) => hasPath(candidate.data, prefix));
    if (layer !== undefined) return layer.source;
  }
  return undefined;
}
