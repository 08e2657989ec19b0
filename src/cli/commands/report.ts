/**
 * `deno task report <runs or sweeps...> [--out DIR]`: exit 0 written, 2 bad input.
 * @module
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { UserError } from "../../errors.ts";
import { writeReport } from "../../report/mod.ts";

/** The report command's part of the usage text. */
export const REPORT_USAGE = `report (deno task report <runs or sweeps...> [--out DIR]):
  arguments are run folders, sweeps (sweep.json or the folder holding it) or folders of runs
  --out DIR          where index.html and its pictures go (default: outputs/report)
`;

/** Runs `deno task report` with `args`; returns the exit code. */
export async function reportCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { out: { type: "string" }, help: { type: "boolean", short: "h" } },
  });
  if (values.help) {
    console.log(REPORT_USAGE);
    return 0;
  }
  if (positionals.length === 0) {
    throw new UserError("expected run folders or sweeps", {
      expected: "deno task report <runs or sweeps...> [--out DIR]",
    });
  }
  const result = await writeReport(positionals, { out: values.out ?? join("outputs", "report") });
  console.log(`${result.runs.length} run(s), ${result.images.length} picture(s): ${result.page}`);
  return 0;
}
