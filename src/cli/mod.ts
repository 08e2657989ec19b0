/**
 * The command line: `run <experiment.json> [--set path=value]... [--seed N] [--out DIR]
 * [--dry-run] [--force]`. Exit codes: 0 done, 1 the run failed, 2 bad input, 130 interrupted.
 * @module
 */
import { parseArgs } from "node:util";
import { loadExperiment } from "../config/mod.ts";
import { UserError } from "../errors.ts";
import { runExperiment } from "../run/runner.ts";

const USAGE = `ddpm-lab: train and sample DDPM models from experiment files

usage:
  deno task run <experiment.json> [options]

options:
  --set path=value   override a field, typed by the schema (repeatable),
                     e.g. --set train.epochs=2 --set schedule.timesteps=100
                     or   --set 'dataset={"kind":"folder","path":"/data/faces"}'
  --seed N           override the experiment seed
  --out DIR          put run folders under DIR (default: outputs)
  --dry-run          print the resolved config, dataset size, parameter count,
                     alpha_bar_T and the number of training steps, then exit
  --force            replace a complete run of the same config and seed
  -h, --help         this help
`;

function parseSeed(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 2 ** 31 - 1) {
    throw new UserError(`--seed ${text}: not a valid seed`, {
      expected: "an integer in [0, 2147483647]",
    });
  }
  return n;
}

async function runCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      set: { type: "string", multiple: true },
      seed: { type: "string" },
      out: { type: "string" },
      "dry-run": { type: "boolean" },
      force: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (positionals.length !== 1) {
    throw new UserError(`expected one experiment file, got ${positionals.length}`, {
      expected: "deno task run <experiment.json> [options]",
    });
  }
  const loaded = await loadExperiment(positionals[0], {
    sets: values.set ?? [],
    seed: parseSeed(values.seed),
  });
  const result = await runExperiment(loaded, {
    outRoot: values.out ?? "outputs",
    force: values.force ?? false,
    dryRun: values["dry-run"] ?? false,
  });
  return result.status === "interrupted" ? 130 : 0;
}

/** Runs the command line `args` and returns the process exit code. */
export async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  try {
    if (command === "run") return await runCommand(rest);
    if (command === undefined || command === "-h" || command === "--help" || command === "help") {
      console.log(USAGE);
      return command === undefined ? 2 : 0;
    }
    throw new UserError(`unknown command '${command}'`, { expected: "run" });
  } catch (err) {
    if (err instanceof UserError) {
      console.error(`error: ${err.message}`);
      return 2;
    }
    if (
      err instanceof TypeError && "code" in err && String(err.code).startsWith("ERR_PARSE_ARGS")
    ) {
      console.error(`error: ${err.message}\n\n${USAGE}`);
      return 2;
    }
    console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
    return 1;
  }
}
