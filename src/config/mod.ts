/**
 * Loading experiment files, Hydra-style: every source is a layer, every layer is a patch, and
 * the merged result is validated once, with errors naming the layer that set the offending
 * value (a file with its line and column, or a `--set` / `--seed` flag) and the JSON path.
 *
 * Layers, lowest first: the schema's defaults, the `extends` chain (root ancestor first), the
 * experiment file, each `--set` in order, then `--seed`. Objects merge deeply (the later layer
 * wins), arrays are replaced whole, a patch without `kind` keeps the kind below it, and a patch
 * with a different `kind` replaces the section whole. Files are JSON with comments.
 * @module
 */
import { dirname, resolve } from "node:path";
import type { z } from "zod";
import {
  type Experiment,
  ExperimentFileSchema,
  ExperimentSchema,
} from "../../schemas/experiment.ts";
import { UserError } from "../errors.ts";
import { issuesError, type Source } from "./issues.ts";
import { type JsonDocument, locate, parseJsonc } from "./json.ts";
import { hasPath, isJsonObject, type JsonObject, mergeLayers, objectAtPath } from "./merge.ts";
import { checkSetPath, parseSetOverride } from "./overrides.ts";

export { canonicalJson, configHash } from "./canonical.ts";
export { describeSampler, formatConfigSummary } from "./summary.ts";

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

/** One patch of the experiment and where it came from. */
interface Layer {
  /** The file, the flag as written (`--set train.epochs=3`, `--seed 7`), or `defaults`. */
  source: string;
  data: JsonObject;
  /** The parsed file, to give line and column of a path. */
  document?: JsonDocument;
}

const DEFAULTS = "defaults";

/**
 * Loads, layers and validates an experiment file. Throws a {@linkcode UserError} naming the
 * file or flag and the JSON path for invalid JSON, unknown keys, wrong types or values, a
 * missing or cyclic `extends` and unknown `--set` paths; all validation problems of the merged
 * experiment are reported together, one per line.
 */
export async function loadExperiment(
  path: string,
  options: LoadOptions = {},
): Promise<LoadedExperiment> {
  const file = resolve(path);
  const { chain, layers: fileLayers } = await loadChain(file);
  const layers: Layer[] = [{ source: DEFAULTS, data: schemaDefaults() }, ...fileLayers];
  let merged = layers.reduce((below, layer) => mergeLayers(below, layer.data) as JsonObject, {});

  const overrides: string[] = [];
  for (const text of options.sets ?? []) {
    const override = parseSetOverride(text);
    checkSetPath(override, merged);
    const data = objectAtPath(override.path, override.value);
    resolveDatasetPath(data, Deno.cwd());
    layers.push({ source: override.flag, data });
    merged = mergeLayers(merged, data) as JsonObject;
    overrides.push(text);
  }
  if (options.seed !== undefined) {
    const data = { seed: options.seed };
    layers.push({ source: `--seed ${options.seed}`, data });
    merged = mergeLayers(merged, data) as JsonObject;
    overrides.push(`seed=${options.seed}`);
  }

  const parsed = ExperimentSchema.safeParse(merged);
  if (!parsed.success) {
    throw issuesError(parsed.error.issues, merged, {
      schema: ExperimentSchema,
      sourceOf: (issuePath) => sourceOf(layers, issuePath) ?? { file },
      file,
    });
  }
  return { config: parsed.data, file, chain, overrides };
}

/** The lowest layer: every section's default (the kind of each kind-discriminated one). */
function schemaDefaults(): JsonObject {
  const defaults: JsonObject = {};
  for (const [key, schema] of Object.entries(ExperimentSchema.shape)) {
    const parsed = (schema as z.ZodType).safeParse(undefined);
    if (parsed.success && parsed.data !== undefined) defaults[key] = parsed.data;
  }
  return defaults;
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
    const document = await readExperimentFile(current);
    // `sweep` and `launcher` say how to run points of the file (src/sweep), not what a run is.
    const { extends: parent, $schema: _schema, sweep: _sweep, launcher: _launcher, ...data } =
      document.value as JsonObject;
    resolveDatasetPath(data, dirname(current));
    layers.unshift({ source: current, data, document });
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

/**
 * Reads and parses one experiment file, with the checks that need no merge: a JSON object,
 * known top-level keys, `extends` a path. Sections may be partial: they are patches.
 */
async function readExperimentFile(file: string): Promise<JsonDocument> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (error) {
    throw readError(file, error);
  }
  const document = parseJsonc(text, file);
  const data = document.value;
  if (!isJsonObject(data)) throw new UserError("expected a JSON object", { file });
  const keys = Object.keys(ExperimentFileSchema.shape);
  for (const key of Object.keys(data)) {
    if (!keys.includes(key)) {
      throw new UserError(`unknown key '${key}'`, {
        file,
        ...locate(document, [key]),
        path: key,
        expected: `one of ${keys.join(", ")}`,
      });
    }
  }
  if (data.extends !== undefined && (typeof data.extends !== "string" || data.extends === "")) {
    throw new UserError(`invalid value ${JSON.stringify(data.extends)}`, {
      file,
      ...locate(document, ["extends"]),
      path: "extends",
      expected: "a path relative to this file",
    });
  }
  return document;
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
 * Where an issue at `path` comes from: the latest layer (defaults aside) that has the path,
 * else the latest that has its longest present prefix (a missing `dataset.path` comes from the
 * layer that set `dataset`), with the line and column for a file. Undefined when no layer has
 * any of it (a missing `name`).
 */
function sourceOf(layers: readonly Layer[], path: readonly PropertyKey[]): Source | undefined {
  for (let length = path.length; length >= 1; length--) {
    const prefix = path.slice(0, length);
    const layer = layers.findLast((candidate) =>
      candidate.source !== DEFAULTS && hasPath(candidate.data, prefix)
    );
    if (layer === undefined) continue;
    const position = layer.document ? locate(layer.document, prefix) : undefined;
    return { file: layer.source, ...position };
  }
  return undefined;
}
