/**
 * `deno task eval <run> [--samples N] [--set sampler.x=v] [--json]`: samples N images from a
 * trained run, evaluates them against its dataset and writes eval.json (src/run/evaluate_run.ts).
 * @module
 */
import { parseArgs } from "node:util";
import { UserError } from "../../errors.ts";
import { positiveInt } from "../args.ts";

/** `deno task eval <run>`: exit 0 written, 2 bad input. */
export async function evalCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      samples: { type: "string" },
      set: { type: "string", multiple: true },
      json: { type: "boolean" },
    },
  });
  if (positionals.length !== 1) {
    throw new UserError(`expected one run folder, got ${positionals.length}`, {
      expected: "deno task eval <run> [--samples N] [--set sampler.x=v]",
    });
  }
  const { evaluateRun } = await import("../../run/evaluate_run.ts");
  const { formatEvaluation } = await import("../../eval/mod.ts");
  const result = await evaluateRun(positionals[0], {
    samples: positiveInt("--samples", values.samples),
    sets: values.set ?? [],
    log: values.json ? () => {} : (l) => console.log(l),
  });
  if (values.json) console.log(JSON.stringify(result, null, 2));
  else {
    const on = result.engine.executionProvider
      ? `${result.engine.name} ${result.engine.executionProvider}`
      : result.engine.name;
    console.log(
      `${formatEvaluation(result)}\nwrote ${result.file} (${result.wallSeconds} s, of which ` +
        `${result.networkSeconds} s in the network on ${on})`,
    );
  }
  return 0;
}
