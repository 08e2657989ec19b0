/**
 * The command line: `deno task <command>` (src/cli/main.ts), one file per command in
 * ./commands/. Commands: `run`, `sample`, `verify`, `diff`, `runs`, `sweep`, `report`,
 * `answers`, `fid`, `eval`, `judge`.
 *
 * Exit codes: 0 done (diff: identical; verify: all match), 1 the run failed (diff: the runs
 * differ; verify: a mismatch; sweep, answers: a point failed), 2 bad input, 130 interrupted.
 * @module
 */
export { COMMANDS, main } from "./main.ts";
export { USAGE } from "./usage.ts";
