/**
 * `deno task diff <runA> <runB> [--json] [--out DIR]`: two runs' configs, metrics and artifacts
 * side by side (src/run/diff.ts); loads no TensorFlow.js.
 * @module
 */
import { parseArgs } from "node:util";
import { UserError } from "../../errors.ts";
import { diffRuns, formatRunDiff } from "../../run/diff.ts";

/** `deno task diff <runA> <runB>`: exit 0 identical, 1 the runs differ, 2 bad input. */
export async function diffCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { json: { type: "boolean" }, out: { type: "string" } },
  });
  if (positionals.length !== 2) {
    throw new UserError(`expected two run folders, got ${positionals.length}`, {
      expected: "deno task diff <runA> <runB> [--json] [--out DIR]",
    });
  }
  const result = await diffRuns(positionals[0], positionals[1], { out: values.out });
  if (values.json) console.log(JSON.stringify(result, null, 2));
  else {
    console.log(formatRunDiff(result));
    if (!values.out) {
      console.log("(pass --out DIR to write A | B | |A-B| composites of the images)");
    }
  }
  return result.identical ? 0 : 1;
}
