/**
 * `deno task verify <run-folder>`: re-runs a run's config in a temporary folder and compares
 * every artifact (src/run/verify.ts).
 * @module
 */
import { parseArgs } from "node:util";
import { UserError } from "../../errors.ts";

/** `deno task verify <run-folder>`: exit 0 all artifacts match, 1 some differ, 2 bad input. */
export async function verifyCommand(args: string[]): Promise<number> {
  const { positionals } = parseArgs({ args, allowPositionals: true, options: {} });
  if (positionals.length !== 1) {
    throw new UserError(`expected one run folder, got ${positionals.length}`, {
      expected: "deno task verify <run-folder>",
    });
  }
  console.log(`re-running ${positionals[0]} in a temporary folder...`);
  const { verifyRun } = await import("../../run/verify.ts");
  const result = await verifyRun(positionals[0], { log: (l) => console.log(`  ${l}`) });
  for (const c of result.checks) console.log(`${c.status.padEnd(8)} ${c.path}`);
  console.log(result.identical ? "all artifacts match" : "some artifacts differ");
  return result.identical ? 0 : 1;
}
