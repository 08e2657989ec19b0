/**
 * The command line's usage text (`deno task <command> --help`, or no command).
 * @module
 */
import { ANSWERS_USAGE } from "./commands/answers.ts";
import { REPORT_USAGE } from "./commands/report.ts";
import { SWEEP_USAGE } from "./commands/sweep.ts";

/** The usage of every command, with the options of `run` and the parts of the others. */
export const USAGE = `ddpm-lab: train and sample DDPM models from experiment files

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
