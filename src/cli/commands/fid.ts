/**
 * `deno task fid <folderA|run> [<folderB|run>] [--json] [--resize N] [--features model.json]
 * [--kid-subsets N] [--kid-subset-size N]`: KID and FID of two image sets, or of one run's
 * samples against its dataset (src/run/fid.ts).
 * @module
 */
import { parseArgs } from "node:util";
import { positiveInt } from "../args.ts";

/** `deno task fid A [B]`: exit 0 measured, 2 bad input. */
export async function fidCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      json: { type: "boolean" },
      resize: { type: "string" },
      features: { type: "string" },
      "kid-subsets": { type: "string" },
      "kid-subset-size": { type: "string" },
    },
  });
  const log = values.json ? () => {} : (l: string) => console.log(l);
  const { fidBetween } = await import("../../run/fid.ts");
  const { formatEvaluation } = await import("../../eval/mod.ts");
  const result = await fidBetween(positionals, {
    resize: positiveInt("--resize", values.resize),
    features: values.features,
    kidSubsets: positiveInt("--kid-subsets", values["kid-subsets"]),
    kidSubsetSize: positiveInt("--kid-subset-size", values["kid-subset-size"]),
    log,
  });
  if (values.json) console.log(JSON.stringify(result, null, 2));
  else console.log(formatEvaluation(result));
  return 0;
}
