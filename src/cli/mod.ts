/**
 * The command line. Commands: `run`, `sample`, `verify`, `diff`, `runs`, `fid`, `eval`, `judge`.
 * Exit codes: 0 done (diff:
 * identical; verify: all match), 1 the run failed (diff: the runs differ; verify: a mismatch),
 * 2 bad input, 130 interrupted.
 * @module
 */
import { parseArgs } from "node:util";
import { type LoadedExperiment, loadExperiment } from "../config/mod.ts";
import { describeError, RunFailure, UserError } from "../errors.ts";
import { diffRuns, formatRunDiff } from "../run/diff.ts";
import { formatRunTable, listRunsAt } from "../run/list.ts";
import { describeRun, experimentFolder } from "../run/describe.ts";
import { hasCheckpoint, readManifest } from "../run/manifest.ts";
import { findInterruptedRun, resumeCommand } from "../run/resume.ts";
import { loadSweepPoint } from "../sweep/spec.ts";
import { TerminalProgress } from "./progress.ts";
import { ANSWERS_USAGE, answersCommand } from "./answers.ts";
import { REPORT_USAGE, reportCommand } from "./report.ts";
import { SWEEP_USAGE, sweepCommand } from "./sweep.ts";
import { currentSlurmJob, requeueJob } from "../sweep/slurm.ts";
import type { RequeueRequest } from "../run/runner.ts";

const USAGE = `ddpm-lab: train and sample DDPM models from experiment files

usage:
  deno task run <experiment.json> [options]   train (or reuse a training) and sample
  deno task verify <run-folder>               re-run a run's config and compare every artifact
  deno task diff <runA> <runB> [--json] [--out DIR]
                                              config, metrics and artifacts side by side
  deno task sample <run> [--seed N] [--count N] [--set sampler.path=value]
                                              sample a trained run again, into
                                              <run>/samples/seed-<N>-<hash>/ (no training)
  deno task runs [outputs]                    list run folders: status, steps, loss, overrides
  deno task sweep <experiment.json> [options] run the points of the file's sweep
  deno task report <runs or sweeps...> [--out DIR]
                                              an HTML page comparing runs
  deno task answers [--budget cpu|gpu] [--dry-run]
                                              the seeds' questions answered: run what is
                                              missing, write docs/answers.md
  deno task fid <folderA|run> [<folderB|run>] [--json] [--resize N]
                                              KID and FID of two image sets (a run: its
                                              samples.png; one run alone: against its dataset)
  deno task eval <run> [--samples N] [--set sampler.x=v] [--json]
                                              sample N images from a trained run, evaluate
                                              them against its dataset, write eval.json
  deno task judge <experiment.json> [--set ...]
                                              train (or load) the attribute judge of a
                                              labelled dataset; held-out accuracy per attribute

run options:
  --set path=value   override a field, typed by the schema (repeatable),
                     e.g. --set train.epochs=2 --set schedule.timesteps=100
                     or   --set 'dataset={"kind":"folder","path":"/data/faces"}'
  --seed N           override the experiment seed
  --out DIR          put run folders under DIR (default: outputs)
  --dry-run          print the resolved config, dataset size, parameter count,
                     alpha_bar_T, the number of training steps and the wall time
                     estimated from a few measured steps on this machine, then exit
  --force            replace a complete run of the same config and seed
  --resume           continue the interrupted run of this config and seed (alone:
                     the one interrupted run of this file, whatever its overrides)
  --retrain          train even if a complete run has the same training config
  --sweep-index I    run point I of the file's sweep (what a sweep's processes run)
  --requeue          on SIGUSR2 (Slurm's warning before the time limit): checkpoint,
                     then requeue this Slurm job, which resumes the run (the sweep's
                     sbatch script passes it)
  -h, --help         this help

${SWEEP_USAGE}
${REPORT_USAGE}
${ANSWERS_USAGE}`;

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

/**
 * Aborts `controller` on Ctrl-C or SIGTERM (the run finishes its step and checkpoints). A
 * second Ctrl-C exits at once; a SIGTERM after the first stop is ignored, so that the checkpoint
 * is written within Slurm's KillWait (it sends SIGTERM, then SIGKILL).
 */
function abortOnSignals(controller: AbortController): () => void {
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  const handlers = signals.map((signal) => {
    const handler = () => {
      if (controller.signal.aborted) {
        if (signal === "SIGINT") Deno.exit(130);
        console.error("\nSIGTERM: still finishing the step and its checkpoint");
        return;
      }
      console.error(
        "\ninterrupt: finishing the current step and writing a checkpoint (Ctrl-C again to abort)",
      );
      controller.abort();
    };
    Deno.addSignalListener(signal, handler);
    return () => Deno.removeSignalListener(signal, handler);
  });
  return () => handlers.forEach((remove) => remove());
}

/**
 * `run --requeue` (what a sweep's sbatch script runs): on SIGUSR2, Slurm's warning before the
 * time limit, the run stops after its step, checkpoints, and requeues its job, which resumes it.
 * Listens from the start of the command, so that a warning during loading is not lost.
 */
function requeueOnWarning(controller: AbortController): RequeueRequest & { release(): void } {
  let warned = false;
  const job = currentSlurmJob();
  const handler = () => {
    if (warned || controller.signal.aborted) return;
    warned = true;
    console.error(
      "\nSIGUSR2 (Slurm: the time limit is near): finishing the current step, writing a " +
        `checkpoint, then ${job ? `requeueing job ${job}` : "stopping (not in a Slurm job)"}`,
    );
    controller.abort();
  };
  Deno.addSignalListener("SIGUSR2", handler);
  return {
    job: job ?? "none",
    requested: () => warned && job !== null,
    requeue: () => requeueJob(job!),
    release: () => Deno.removeSignalListener("SIGUSR2", handler),
  };
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
  const { runExperiment } = await import("../run/runner.ts");
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
  const { estimateRun, formatEstimate } = await import("../run/estimate.ts");
  return formatEstimate(await estimateRun(loaded));
}

async function sampleCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      set: { type: "string", multiple: true },
      seed: { type: "string" },
      count: { type: "string" },
    },
  });
  if (positionals.length !== 1) {
    throw new UserError(`expected one run folder, got ${positionals.length}`, {
      expected: "deno task sample <run> [--seed N] [--count N] [--set sampler.path=value]",
    });
  }
  const count = positiveInt("--count", values.count);
  const { resampleRun } = await import("../run/resample.ts");
  const controller = new AbortController();
  const release = abortOnSignals(controller);
  const bars = Deno.stdout.isTerminal() ? new TerminalProgress() : undefined;
  try {
    const result = await resampleRun(positionals[0], {
      sets: values.set ?? [],
      seed: parseSeed(values.seed),
      count,
      signal: controller.signal,
      progress: bars,
      log: bars?.log,
    });
    return result.dir === null ? 130 : 0;
  } finally {
    bars?.stop();
    release();
  }
}

async function verifyCommand(args: string[]): Promise<number> {
  const { positionals } = parseArgs({ args, allowPositionals: true, options: {} });
  if (positionals.length !== 1) {
    throw new UserError(`expected one run folder, got ${positionals.length}`, {
      expected: "deno task verify <run-folder>",
    });
  }
  console.log(`re-running ${positionals[0]} in a temporary folder...`);
  const { verifyRun } = await import("../run/verify.ts");
  const result = await verifyRun(positionals[0], { log: (l) => console.log(`  ${l}`) });
  for (const c of result.checks) console.log(`${c.status.padEnd(8)} ${c.path}`);
  console.log(result.identical ? "all artifacts match" : "some artifacts differ");
  return result.identical ? 0 : 1;
}

async function diffCommand(args: string[]): Promise<number> {
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

async function runsCommand(args: string[]): Promise<number> {
  const { positionals } = parseArgs({ args, allowPositionals: true, options: {} });
  const root = positionals[0] ?? "outputs";
  const entries = await listRunsAt(root);
  console.log(entries.length === 0 ? `no runs under ${root}` : formatRunTable(entries));
  return 0;
}

function positiveInt(flag: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) {
    throw new UserError(`${flag} ${text}: not a positive integer`, { expected: "an integer >= 1" });
  }
  return n;
}

async function fidCmd(args: string[]): Promise<number> {
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
  const { fidCommand } = await import("../run/evaluate.ts");
  const { formatEvaluation } = await import("../eval/mod.ts");
  const result = await fidCommand(positionals, {
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

async function evalCmd(args: string[]): Promise<number> {
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
  const { evaluateRun } = await import("../run/evaluate.ts");
  const { formatEvaluation } = await import("../eval/mod.ts");
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

async function judgeCmd(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { set: { type: "string", multiple: true }, json: { type: "boolean" } },
  });
  if (positionals.length !== 1) {
    throw new UserError(`expected one experiment file, got ${positionals.length}`, {
      expected: "deno task judge <experiment.json> [--set path=value]",
    });
  }
  const loaded = await loadExperiment(positionals[0], { sets: values.set ?? [] });
  const { config } = loaded;
  const { initBackend } = await import("../backend/mod.ts");
  const { loadDataset } = await import("../data/mod.ts");
  const { labelledFromDataset, trainJudge } = await import("../eval/mod.ts");
  await initBackend(config.backend);
  const log = values.json ? () => {} : (l: string) => console.log(l);
  log(`loading dataset (${config.dataset.kind})...`);
  const dataset = await loadDataset(config.dataset, {
    transform: config.transform,
    seed: config.seed,
    experimentFile: loaded.file,
  });
  const judge = await trainJudge(labelledFromDataset(dataset), { seed: config.seed, log });
  const rows = judge.attributes.map((a) => ({
    attribute: a.name,
    values: a.count,
    accuracy: judge.accuracy[a.name],
    chance: judge.chance[a.name],
  }));
  if (values.json) {
    console.log(
      JSON.stringify({ heldOut: judge.heldOutCount, cached: judge.cached, rows }, null, 2),
    );
  } else {
    console.log(
      `held-out accuracy on ${judge.heldOutCount} real images` +
        `${judge.cached ? " (cached judge)" : ""}; chance = most frequent value`,
    );
    console.log(`  ${"attribute".padEnd(18)} values  accuracy  chance`);
    for (const r of rows) {
      console.log(
        `  ${r.attribute.padEnd(18)} ${String(r.values).padStart(6)}  ${
          r.accuracy.toFixed(3).padStart(8)
        }  ${r.chance.toFixed(3).padStart(6)}`,
      );
    }
  }
  judge.dispose();
  return 0;
}

const COMMANDS: Record<string, (args: string[]) => Promise<number>> = {
  run: runCommand,
  sample: sampleCommand,
  verify: verifyCommand,
  diff: diffCommand,
  runs: runsCommand,
  sweep: sweepCommand,
  report: reportCommand,
  answers: answersCommand,
  fid: fidCmd,
  eval: evalCmd,
  judge: judgeCmd,
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
