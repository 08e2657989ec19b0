/**
 * `deno task answers [--budget cpu|gpu] [--dry-run] [--launcher local|slurm] [--jobs N] [--wait]
 * [--only ids] [--set ...] [--out DIR] [--docs DIR]`. Exit codes: 0 written (dry run: listed),
 * 1 some point failed (the documents are still written from what is complete), 2 bad input, 130
 * interrupted.
 * @module
 */
import { parseArgs } from "node:util";
import { UserError } from "../errors.ts";

/** The answers command's part of the usage text. */
export const ANSWERS_USAGE = `answers (deno task answers [options]): each seed question of
  experiments/answers/ at a budget; runs what is missing, writes docs/answers.md
  --budget NAME      a budget of experiments/answers/budgets.json: cpu (default) or gpu
  --dry-run          list every point (complete, trains, reuses) and its estimated time
  --no-estimate      with --dry-run: list without measuring anything
  --launcher local|slurm, --jobs N, --wait   as for sweeps
  --only ID,ID       only these questions (q1-steps, q2-noise, seed002-variance,
                     seed003-cosine, seed004-conditioning)
  --set path=value   override a field of every point, after the budget's (a shrunk budget;
                     the documents say so)
  --out DIR          runs under DIR instead of the budget's folder
  --docs DIR         write answers.md and answers/ under DIR (default: docs)
`;

/** Runs `deno task answers` with `args`; returns the exit code. */
export async function answersCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      budget: { type: "string", default: "cpu" },
      "dry-run": { type: "boolean" },
      "no-estimate": { type: "boolean" },
      launcher: { type: "string", default: "local" },
      jobs: { type: "string" },
      wait: { type: "boolean" },
      only: { type: "string" },
      set: { type: "string", multiple: true },
      out: { type: "string" },
      docs: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(ANSWERS_USAGE);
    return 0;
  }
  if (positionals.length > 0) {
    throw new UserError(`unexpected argument ${positionals[0]}`, {
      expected: "deno task answers [--budget cpu|gpu] [--dry-run] [options]",
    });
  }
  const launcher = values.launcher;
  if (launcher !== "local" && launcher !== "slurm") {
    throw new UserError(`--launcher ${launcher}: unknown launcher`, { expected: "local or slurm" });
  }
  const jobs = values.jobs === undefined ? undefined : Number(values.jobs);
  if (jobs !== undefined && (!Number.isInteger(jobs) || jobs < 1)) {
    throw new UserError(`--jobs ${values.jobs}: not a positive integer`, { expected: "N >= 1" });
  }
  const { runAnswers } = await import("../answers/mod.ts");
  const controller = new AbortController();
  const onSignal = () => {
    console.error("\ninterrupt: starting no more points; running points checkpoint and stop");
    controller.abort();
  };
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  signals.forEach((s) => Deno.addSignalListener(s, onSignal));
  try {
    const result = await runAnswers({
      budget: values.budget,
      dryRun: values["dry-run"],
      estimate: !values["no-estimate"],
      launcher,
      jobs,
      wait: values.wait,
      only: values.only?.split(",").map((s) => s.trim()).filter((s) => s !== ""),
      sets: values.set ?? [],
      outRoot: values.out,
      docsDir: values.docs,
      signal: controller.signal,
    });
    if (values["dry-run"]) return 0;
    if (controller.signal.aborted) return 130;
    if (result.failures.length > 0) {
      console.log(`\npoints that did not complete:\n${result.failures.join("\n")}`);
      return 1;
    }
    return 0;
  } finally {
    signals.forEach((s) => Deno.removeSignalListener(s, onSignal));
  }
}
