/**
 * Turns Zod issues into one {@linkcode UserError}: each issue becomes a line naming its source
 * (the file or `--set` flag it came from), the dotted JSON path and a readable expectation.
 * @module
 */
import type { z } from "zod";
import { UserError } from "../errors.ts";
import { getAtPath } from "./merge.ts";
import { isIntegerSchema, isWalkFailure, keysAt, walkSchema } from "./schema_walk.ts";

/** Where a value was written: a file (with its line and column when known) or a flag. */
export interface Source {
  /** The file, or the flag as written (`--set train.epochs=3`). */
  file: string;
  /** 1-based line in the file. */
  line?: number;
  /** 1-based column in the file. */
  column?: number;
}

/** One readable problem: where it is, what is wrong and what was expected. */
export interface ConfigProblem {
  /** The file or `--set` flag the problem comes from. */
  source: Source;
  /** The dotted JSON path, e.g. `schedule.timesteps` or `model.multipliers[2]`. */
  path: string;
  /** What is wrong, e.g. `5000 is too big`. */
  message: string;
  /** What was expected, e.g. `an integer <= 4000`. */
  expected?: string;
}

/** How to word and attribute Zod issues. */
export interface IssueOptions {
  /** The schema the input was validated with (to look up integer-ness and valid keys). */
  schema: z.ZodType;
  /** The file (and position) or flag an issue at `path` comes from. */
  sourceOf: (path: readonly PropertyKey[]) => Source;
  /** The source named in the error's first line when there are several problems. */
  file: string;
}

/** Formats a JSON path: `["model", "multipliers", 2]` -> `model.multipliers[2]`. */
export function formatJsonPath(path: readonly PropertyKey[]): string {
  let result = "";
  for (const segment of path) {
    if (typeof segment === "number") result += `[${segment}]`;
    else if (/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(String(segment))) {
      result += `${result === "" ? "" : "."}${String(segment)}`;
    } else result += `[${JSON.stringify(String(segment))}]`;
  }
  return result;
}

/** Turns the issues of one failed validation of `input` into readable problems. */
export function describeIssues(
  issues: readonly z.core.$ZodIssue[],
  input: unknown,
  options: IssueOptions,
): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  for (const issue of issues) {
    for (const { path, message, expected } of describeIssue(issue, input, options.schema)) {
      problems.push({
        source: options.sourceOf(path),
        path: formatJsonPath(path),
        message,
        expected,
      });
    }
  }
  return problems;
}

/**
 * One {@linkcode UserError} for all the issues of a failed validation: a single issue is
 * `source: path: message (expected ...)`, several are one such line each under a header naming
 * their common source, or `file` when they come from several.
 */
export function issuesError(
  issues: readonly z.core.$ZodIssue[],
  input: unknown,
  options: IssueOptions,
): UserError {
  return problemsError(describeIssues(issues, input, options), options.file);
}

/** One {@linkcode UserError} for a non-empty list of problems (see {@linkcode issuesError}). */
export function problemsError(problems: readonly ConfigProblem[], file: string): UserError {
  const errors = problems.map(({ source, path, message, expected }) =>
    new UserError(message, { ...source, path, expected })
  );
  if (errors.length === 1) return errors[0];
  const lines = errors.map((error) => `  ${error.message}`);
  const sources = new Set(problems.map((problem) => problem.source.file));
  const header = `${problems.length} problems in the experiment:`;
  return new UserError(`${header}\n${lines.join("\n")}`, {
    file: sources.size === 1 ? problems[0].source.file : file,
  });
}

interface IssueText {
  path: PropertyKey[];
  message: string;
  expected?: string;
}

function describeIssue(issue: z.core.$ZodIssue, input: unknown, schema: z.ZodType): IssueText[] {
  const path = [...issue.path];
  const value = getAtPath(input, path);
  switch (issue.code) {
    case "invalid_type":
      if (value === undefined) {
        return [{ path, message: "missing required key", expected: typeName(issue.expected) }];
      }
      if (issue.expected === "int" && typeof value === "number") {
        return [{ path, message: `${value} is not an integer`, expected: "an integer" }];
      }
      return [{ path, message: issue.message }];
    case "too_big":
    case "too_small":
      return [describeRange(issue, path, value, schema, input)];
    case "invalid_value":
      return [{
        path,
        message: `invalid value ${describeValue(value)}`,
        expected: oneOf(issue.values.map(String)),
      }];
    case "invalid_union":
      if (issue.discriminator !== undefined && "options" in issue && issue.options) {
        return [{
          path,
          message: value === undefined
            ? `missing '${issue.discriminator}'`
            : `unknown ${issue.discriminator} ${describeValue(value)}`,
          expected: oneOf(issue.options.map(String)),
        }];
      }
      return [{ path, message: issue.message }];
    case "unrecognized_keys": {
      const position = walkSchema({ schema, value: input }, path);
      const keys = isWalkFailure(position) ? undefined : keysAt(position);
      return issue.keys.map((key) => ({
        path: [...path, key],
        message: `unknown key '${key}'`,
        expected: keys ? `one of ${keys.join(", ")}` : undefined,
      }));
    }
    case "invalid_format":
      if (issue.format === "regex" && issue.pattern !== undefined) {
        return [{
          path,
          message: `invalid value ${describeValue(value)}`,
          expected: `a string matching ${issue.pattern}`,
        }];
      }
      return [{ path, message: issue.message }];
    case "not_multiple_of":
      return [{
        path,
        message: `${describeValue(value)} is not a multiple of ${issue.divisor}`,
        expected: `a multiple of ${issue.divisor}`,
      }];
    default:
      return [{ path, message: issue.message }];
  }
}

function describeRange(
  issue: z.core.$ZodIssueTooBig | z.core.$ZodIssueTooSmall,
  path: PropertyKey[],
  value: unknown,
  schema: z.ZodType,
  input: unknown,
): IssueText {
  const big = issue.code === "too_big";
  const bound = Number(big ? issue.maximum : issue.minimum);
  const inclusive = issue.inclusive !== false;
  const op = big ? (inclusive ? "<=" : "<") : (inclusive ? ">=" : ">");
  const message = `${describeValue(value)} is too ${big ? "big" : "small"}`;
  if (issue.origin === "number" || issue.origin === "int") {
    const position = walkSchema({ schema, value: input }, path);
    const integer = issue.origin === "int" ||
      (!isWalkFailure(position) && isIntegerSchema(position.schema));
    return { path, message, expected: `${integer ? "an integer" : "a number"} ${op} ${bound}` };
  }
  const count = (unit: string): string => `${bound} ${unit}${bound === 1 ? "" : "s"}`;
  const limit = issue.exact ? "exactly" : big ? "at most" : "at least";
  if (issue.origin === "array" || issue.origin === "set") {
    const length = Array.isArray(value) ? value.length : undefined;
    return {
      path,
      message: length === undefined ? message : `${length} items are too ${big ? "many" : "few"}`,
      expected: `${limit} ${count("item")}`,
    };
  }
  if (issue.origin === "string") {
    return {
      path,
      message: `${describeValue(value)} is too ${big ? "long" : "short"}`,
      expected: `a string of ${limit} ${count("character")}`,
    };
  }
  return { path, message: issue.message };
}

function typeName(expected: string): string {
  if (expected === "int") return "an integer";
  return /^[aeiou]/.test(expected) ? `an ${expected}` : `a ${expected}`;
}

function oneOf(values: readonly string[]): string {
  return values.length === 1 ? values[0] : `one of ${values.join(", ")}`;
}

/** A short JSON rendering of a value for messages (`"l3"`, `5000`, `[1,2]`). */
export function describeValue(value: unknown): string {
  const text = value === undefined ? "undefined" : JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}
