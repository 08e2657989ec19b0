/**
 * `deno task report <runs or sweeps...> [--out DIR]`.
 * @module
 */
/** The report command's part of the usage text. */
export const REPORT_USAGE = "";
/** Runs `deno task report`. */
export function reportCommand(_args: string[]): Promise<number> {
  return Promise.resolve(2);
}
