/**
 * `deno task sweep <file> [--launcher local|slurm] [--jobs N] [--out DIR] [--set ...]
 * [--dry-run] [--wait]`. Exit codes: 0 every point started is complete (Slurm without --wait:
 * submitted), 1 some point failed, 2 bad input, 130 interrupted.
 * @module
 */
import { parseArgs } from "node:util";
import { UserError } from "../../errors.ts";
import { formatFailures, formatPoints, runSweep } from "../../sweep/mod.ts";

/** The sweep command's part of the usage text. */
export const SWEEP_USAGE = `sweep options (deno task sweep <experiment.json> [options]):
  --launcher local|slurm  run the points here (default) or as an sbatch array job
  --jobs N           at most N points at once (local default 1; slurm: the array's %N)
  --out DIR          run folders and sweep.json under DIR (default: outputs)
  --set path=value   override a field of every point (not a swept one)
  --dry-run          list the points (and the sbatch script) without running anything
  --wait             slurm: follow the job until it ends and report failed points
`;

/** Runs `deno task sweep` with `args`; returns the exit code. */
export async function sweepCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      launcher: { type: "string", default: "local" },
      jobs: { type: "string" },
      out: { type: "string" },
      set: { type: "string", multiple: true },
      "dry-run": { type: "boolean" },
      wait: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(SWEEP_USAGE);
    return 0;
  }
  if (positionals.length !== 1) {
    throw new UserError(`expected one experiment file, got ${positionals.length}`, {
      expected: "deno task sweep <experiment.json> [options]",
    });
  }
  const launcher = values.launcher;
  if (launcher !== "local" && launcher !== "slurm") {
    throw new UserError(`--launcher ${launcher}: unknown launcher`, { expected: "local or slurm" });
  }
  const jobs = values.jobs === undefined ? undefined : Number(values.jobs);
  const controller = new AbortController();
  const onSignal = () => {
    console.error("\ninterrupt: starting no more points; running points checkpoint and stop");
    controller.abort();
  };
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  signals.forEach((s) => Deno.addSignalListener(s, onSignal));
  try {
    const result = await runSweep(positionals[0], {
      launcher,
      jobs,
      outRoot: values.out,
      sets: values.set ?? [],
      dryRun: values["dry-run"],
      wait: values.wait,
      signal: controller.signal,
    });
    if (values["dry-run"]) return 0;
    console.log(`\n${formatPoints(result.index, result.indexPath)}\nindex: ${result.indexPath}`);
    if (controller.signal.aborted) return 130;
    if (result.failed.length > 0) {
      console.log(`\n${result.failed.length} point(s) did not complete:`);
      console.log(formatFailures(result.failed, result.indexPath));
      return 1;
    }
    if (launcher === "slurm" && !values.wait && result.jobs.length > 0) {
      console.log(
        "submitted; follow with squeue, or run the same command with --wait " +
          "(complete points are skipped)",
      );
    }
    return 0;
  } finally {
    signals.forEach((s) => Deno.removeSignalListener(s, onSignal));
  }
}
