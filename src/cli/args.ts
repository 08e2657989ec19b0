/**
 * The command line's typed arguments: a seed, a positive integer.
 * @module
 */
import { UserError } from "../errors.ts";

/** `--seed N`: an integer in [0, 2^31 - 1], or undefined when absent. */
export function parseSeed(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 2 ** 31 - 1) {
    throw new UserError(`--seed ${text}: not a valid seed`, {
      expected: "an integer in [0, 2147483647]",
    });
  }
  return n;
}

/** `flag N`: an integer >= 1, or undefined when absent. */
export function positiveInt(flag: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) {
    throw new UserError(`${flag} ${text}: not a positive integer`, { expected: "an integer >= 1" });
  }
  return n;
}
