/**
 * The command line's entry point and dispatcher: `deno task <command>` runs `main` with the
 * command and its arguments. Each command is a file of ./commands/; those that do not train or
 * sample (`--dry-run`'s description, `diff`, `runs`) load no TensorFlow.js, so they start fast.
 * @module
 */
import { describeError, RunFailure, UserError } from "../errors.ts";
import { answersCommand } from "./commands/answers.ts";
import { diffCommand } from "./commands/diff.ts";
import { evalCommand } from "./commands/eval.ts";
import { fidCommand } from "./commands/fid.ts";
import { judgeCommand } from "./commands/judge.ts";
import { reportCommand } from "./commands/report.ts";
import { runCommand } from "./commands/run.ts";
import { runsCommand } from "./commands/runs.ts";
import { sampleCommand } from "./commands/sample.ts";
import { sweepCommand } from "./commands/sweep.ts";
import { verifyCommand } from "./commands/verify.ts";
import { USAGE } from "./usage.ts";

/** Each command by name: its arguments to its exit code. */
export const COMMANDS: Record<string, (args: string[]) => Promise<number>> = {
  run: runCommand,
  sample: sampleCommand,
  verify: verifyCommand,
  diff: diffCommand,
  runs: runsCommand,
  sweep: sweepCommand,
  report: reportCommand,
  answers: answersCommand,
  fid: fidCommand,
  eval: evalCommand,
  judge: judgeCommand,
};

/** Runs the command line `args` and returns the process exit code. */
export async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  try {
    if (command === undefined || command === "-h" || command === "--help" || command === "help") {
      console.log(USAGE);
      return command === undefined ? 2 : 0;
    }
    const handler = COMMANDS[command];
    if (!handler) {
      throw new UserError(`unknown command '${command}'`, {
        expected: Object.keys(COMMANDS).join(", "),
      });
    }
    return await handler(rest);
  } catch (err) {
    // Expected failures print their message alone; DDPM_LAB_DEBUG=1 adds the stacks.
    const debug = Deno.env.get("DDPM_LAB_DEBUG") === "1";
    if (err instanceof UserError || err instanceof RunFailure) {
      console.error(describeError(err, { debug }));
      return err instanceof UserError ? 2 : 1;
    }
    if (
      err instanceof TypeError && "code" in err && String(err.code).startsWith("ERR_PARSE_ARGS")
    ) {
      console.error(`error: ${err.message}\n\n${USAGE}`);
      return 2;
    }
    // A full disk or a folder that cannot be written, in a command that is not a run.
    const { explainCommandFailure } = await import("../run/failures.ts");
    console.error(describeError((await explainCommandFailure(err)) ?? err, { debug }));
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
