/**
 * `deno task runs [outputs]`: the run folders under a root, one line each (status, steps, loss,
 * overrides; src/run/list.ts); loads no TensorFlow.js.
 * @module
 */
import { parseArgs } from "node:util";
import { formatRunTable, listRunsAt } from "../../run/list.ts";

/** `deno task runs [outputs]`: exit 0. */
export async function runsCommand(args: string[]): Promise<number> {
  const { positionals } = parseArgs({ args, allowPositionals: true, options: {} });
  const root = positionals[0] ?? "outputs";
  const entries = await listRunsAt(root);
  console.log(entries.length === 0 ? `no runs under ${root}` : formatRunTable(entries));
  return 0;
}
