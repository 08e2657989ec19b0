/**
 * Canonical JSON and the config hash: the same experiment gives the same text and hash
 * whatever the key order it was written in.
 * @module
 */
import { createHash } from "node:crypto";
import type { Experiment } from "../../schemas/experiment.ts";

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (typeof value !== "object" || value === null) return value;
  const entries = Object.entries(value).filter(([, item]) => item !== undefined);
  entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return Object.fromEntries(entries.map(([key, item]) => [key, sortKeys(item)]));
}

/**
 * JSON text with the keys of every object sorted (by UTF-16 code unit order), no whitespace,
 * and `undefined` members left out, as `JSON.stringify` does.
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value)) ?? "null";
}

/** The hex SHA-256 of the canonical JSON of a resolved experiment. */
export function configHash(config: Experiment): string {
  return createHash("sha256").update(canonicalJson(config)).digest("hex");
}
