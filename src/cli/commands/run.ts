/**
 * `deno task run`: one experiment, or (`--dry-run`) what it would do and how long it would take.
 * TensorFlow.js is loaded only once the run starts, so `--dry-run`'s description starts fast.
 * @module
 */
import { parseArgs } from "node:util";
import { type LoadedExperiment, loadExperiment } from "../../config/mod.ts";
import { UserError } from "../../errors.ts";
import { describeRun, experimentFolder } from "../../run/describe.ts";
import { hasCheckpoint, readManifest } from "../../run/manifest.ts";
import { findInterruptedRun, resumeCommand } from "../../run/resume.ts";
import type { RequeueRequest } from "../../run/types.ts";
import { loadSweepPoint } from "../../sweep/spec.ts";
import { parseSeed } from "../args.ts";
import { TerminalProgress } from "../progress.ts";
import { abortOnSignals, requeueOnWarning } from "../signals.ts";
import { USAGE } from "../usage.ts";

/**
 * `deno task run <experiment.json> [options]`: trains (or reuses a training) and samples; exit 0
 * done, 1 the run failed, 2 bad input, 130 interrupted (the resume command is printed).
 */
export async function runCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      set: { type: "string", multiple: true },
      seed: { type: "string" },
      out: { type: "string" },
      "dry-run": { type: "boolean" },
      force: { type: "boolean" },
      resume: { type: "boolean" },
      retrain: { type: "boolean" },
      "sweep-index": { type: "string" },
      requeue: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const controller = new AbortController();
  const requeue = values.requeue && Deno.build.os !== "windows"
    ? requeueOnWarning(controller)
    : undefined;
  try {
    return await runWith(values, positionals, { controller, requeue });
  } finally {
    requeue?.release();
  }
}

/** `run` once its arguments are parsed and the warning (`--requeue`) is listened to. */
async function runWith(
  values: {
    set?: string[];
    seed?: string;
    out?: string;
    "dry-run"?: boolean;
    force?: boolean;
    resume?: boolean;
    retrain?: boolean;
    "sweep-index"?: string;
  },
  positionals: string[],
  stop: { controller: AbortController; requeue?: RequeueRequest },
): Promise<number> {
  if (positionals.length !== 1) {
    throw new UserError(`expected one experiment file, got ${positionals.length}`, {
      expected: "deno task run <experiment.json> [options]",
    });
  }
  if (values.resume && values.force) {
    throw new UserError("--resume and --force exclude each other", {
      expected: "--resume to continue a run, --force to start it over",
    });
  }
  const sweepIndex = values["sweep-index"];
  if (sweepIndex !== undefined && values.seed !== undefined) {
    throw new UserError("--sweep-index and --seed exclude each other", {
      expected: "the seeds of a sweep in its sweep.seeds",
    });
  }
  let loaded = sweepIndex === undefined
    ? await loadExperiment(positionals[0], {
      sets: values.set ?? [],
      seed: parseSeed(values.seed),
    })
    : await loadSweepPoint(positionals[0], { sets: values.set ?? [], index: Number(sweepIndex) });
  const outRoot = values.out ?? "outputs";
  if (values["dry-run"]) {
    console.log(await describeRun(loaded, outRoot));
    console.log(await estimateLine(loaded));
    return 0;
  }
  let resume = values.resume ?? false;
  if (sweepIndex !== undefined && !resume && !values.force) {
    // A sweep point stopped earlier (Ctrl-C, a cancelled or requeued Slurm task, a full disk)
    // continues from its checkpoint.
    const dir = experimentFolder(loaded.config, outRoot);
    const manifest = await readManifest(dir);
    if (manifest && manifest.status !== "complete" && hasCheckpoint(manifest)) {
      const status = manifest.status === "running" ? "killed" : manifest.status;
      const restart = Deno.env.get("SLURM_RESTART_COUNT");
      console.log(
        `resuming the ${status} point at ${dir}` +
          (restart && restart !== "0" ? ` (Slurm restart ${restart})` : ""),
      );
      resume = true;
    }
  }
  if (values.resume) {
    // --resume without the run's overrides: the one interrupted run of this file, if any.
    const found = await findInterruptedRun(experimentFolder(loaded.config, outRoot), {
      file: loaded.file,
      name: loaded.config.name,
      outRoot,
    });
    if (found) {
      const overrides = found.manifest.source.overrides;
      console.log(
        `resuming ${found.dir}` + (overrides.length ? ` (overrides: ${overrides.join(" ")})` : ""),
      );
      loaded = await loadExperiment(found.manifest.source.file, { sets: overrides });
    }
  }
  // Loaded on demand, so that diff and runs never load TensorFlow.js.
  const { runExperiment } = await import("../../run/runner.ts");
  const { controller } = stop;
  const release = abortOnSignals(controller);
  const bars = Deno.stdout.isTerminal() ? new TerminalProgress() : undefined;
  try {
    const result = await runExperiment(loaded, {
      outRoot,
      force: values.force ?? false,
      resume,
      retrain: values.retrain ?? false,
      signal: controller.signal,
      progress: bars,
      log: bars?.log,
      ...(stop.requeue ? { requeue: stop.requeue } : {}),
    });
    bars?.stop();
    if (result.requeued) {
      console.log(
        `requeued Slurm job ${result.requeued.job}: it resumes from the checkpoint of step ` +
          `${result.requeued.step} when Slurm starts it again`,
      );
      return 0;
    }
    if (result.status !== "interrupted") return 0;
    console.log(
      `resume with: ${resumeCommand(loaded.file, { overrides: loaded.overrides, outRoot })}`,
    );
    return 130;
  } finally {
    bars?.stop();
    release();
  }
}

/** The dry run's estimated wall time, measured with a few real steps on this machine. */
async function estimateLine(loaded: LoadedExperiment): Promise<string> {
  const { estimateRun, formatEstimate } = await import("../../run/estimate.ts");
  return formatEstimate(await estimateRun(loaded));
}
