/**
 * `--set path=value` overrides: parsing, and checking the path against the experiment schema
 * (for the kind each section has in the layers below) before the override becomes a layer.
 * @module
 */
import { ExperimentSchema } from "../../schemas/experiment.ts";
import { UserError } from "../errors.ts";
import { formatJsonPath } from "./issues.ts";
import type { JsonObject } from "./merge.ts";
import { isWalkFailure, walkSchema } from "./schema_walk.ts";

/** One parsed `--set path=value`. */
export interface SetOverride {
  /** The override as given, e.g. `train.epochs=3`. */
  text: string;
  /** The flag as the user wrote it, e.g. `--set train.epochs=3`: the source named in errors. */
  flag: string;
  /** The dotted path split into keys, e.g. `["train", "epochs"]`. */
  path: string[];
  /** The value: parsed as JSON when it parses, else the plain string. */
  value: unknown;
}

/** The top-level keys a `--set` may start with: every key of the resolved experiment. */
export function settableKeys(): string[] {
  return Object.keys(ExperimentSchema.shape).filter((key) => key !== "$schema");
}

/**
 * Parses `path=value` (split at the first `=`). The value is JSON when it parses (numbers,
 * booleans, arrays, objects, quoted strings), else the plain string (`dataset.path=/data`).
 */
export function parseSetOverride(text: string): SetOverride {
  const flag = `--set ${text}`;
  const equals = text.indexOf("=");
  if (equals < 0) {
    throw new UserError("missing '='", { file: flag, expected: "path=value, e.g. train.epochs=5" });
  }
  const pathText = text.slice(0, equals).trim();
  const path = pathText.split(".");
  if (path.some((segment) => segment === "")) {
    throw new UserError(`invalid path '${pathText}'`, {
      file: flag,
      expected: "a dotted path of keys, e.g. train.epochs",
    });
  }
  const valueText = text.slice(equals + 1);
  let value: unknown;
  try {
    value = JSON.parse(valueText);
  } catch {
    value = valueText;
  }
  return { text, flag, path, value };
}

/**
 * Checks that `override.path` exists in the schema: its first key must be a key of the
 * experiment and each further key a key of the object reached, for the `kind` the section has
 * in `current` (the experiment merged so far) or by default. Throws a {@linkcode UserError}
 * naming the flag and listing the valid keys.
 */
export function checkSetPath(override: SetOverride, current: JsonObject): void {
  const { flag, path } = override;
  const [section] = path;
  if (!settableKeys().includes(section)) {
    throw new UserError(`unknown key '${section}'`, {
      file: flag,
      path: section,
      expected: `one of ${settableKeys().join(", ")}`,
    });
  }
  const walked = walkSchema({ schema: ExperimentSchema, value: current }, path);
  // An unknown kind is reported by validation, naming the layer that set it.
  if (!isWalkFailure(walked) || walked.unknownKind) return;
  const where = formatJsonPath(path.slice(0, walked.depth + 1));
  const parent = formatJsonPath(path.slice(0, walked.depth));
  if (walked.validKeys === undefined) {
    throw new UserError(`${parent} is ${walked.message}`, { file: flag, path: where });
  }
  const kind = walked.kind === undefined ? "" : ` for ${parent} kind '${walked.kind}'`;
  throw new UserError(`${walked.message}${kind}`, {
    file: flag,
    path: where,
    expected: `one of ${walked.validKeys.join(", ")}`,
  });
}
