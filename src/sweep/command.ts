/**
 * The command that runs one point of a sweep in its own process: `deno run -A --config
 * <project>/deno.json <project>/src/cli/main.ts run <file> --sweep-index <i> --out <out> --set ...`, the
 * same as `deno task run <file> --sweep-index <i>` but independent of the current folder (what
 * a Slurm node or a child process needs).
 * @module
 */
import { join, resolve } from "node:path";
export { shellQuote } from "../run/resume.ts";

/** The ddpm-lab checkout this code runs from. */
export const PROJECT_DIR: string = new URL("../..", import.meta.url).pathname;

/**
 * The argv of point `index` (a number, or a shell expression such as `$SLURM_ARRAY_TASK_ID`
 * for a script), starting with the Deno executable that runs this process.
 */
export function pointCommand(
  file: string,
  options: {
    index: number | string;
    outRoot: string;
    sets: readonly string[];
    /** Slurm: `--requeue`, so that the warning before the time limit requeues the point. */
    requeue?: boolean;
  },
): string[] {
  return [
    Deno.execPath(),
    "run",
    "-A",
    "--config",
    join(PROJECT_DIR, "deno.json"),
    join(PROJECT_DIR, "src", "cli", "main.ts"),
    "run",
    resolve(file),
    "--sweep-index",
    String(options.index),
    "--out",
    resolve(options.outRoot),
    ...options.sets.flatMap((s) => ["--set", s]),
    ...(options.requeue ? ["--requeue"] : []),
  ];
}
