/**
 * The dry-run report (`--dry-run`): the resolved config, the dataset size, the parameter count,
 * ᾱ_T and √ᾱ_T of the schedule, the number of training steps and the run folder. It loads no
 * TensorFlow.js and decodes no image, so it stays fast.
 * @module
 */
import type { Experiment } from "../../schemas/experiment.ts";
import { configHash, formatConfigSummary, type LoadedExperiment } from "../config/mod.ts";
import { plural } from "../config/summary.ts";
import { countImages } from "../data/mod.ts";
import { makeSchedule, terminalSignal } from "../diffusion/schedule.ts";
import { countParameters } from "../model/unet.ts";
import { plannedSteps } from "../train/plan.ts";
import { runFolder } from "./folder.ts";
import { findReusableTraining, trainingHash } from "./training_cache.ts";

/** Number of images in the configured dataset, without decoding any. */
export async function datasetSize(config: Experiment, file: string): Promise<number> {
  return await countImages(config.dataset, { experimentFile: file });
}

/** The run folder of a resolved experiment under `outRoot`. */
export function experimentFolder(config: Experiment, outRoot: string): string {
  return runFolder(outRoot, { name: config.name, seed: config.seed, hash: configHash(config) });
}

/** The dry-run report: resolved config, dataset size, parameters, ᾱ_T and the step count. */
export async function describeRun(loaded: LoadedExperiment, outRoot: string): Promise<string> {
  const { config } = loaded;
  const { alphaBarT, sqrtAlphaBarT } = terminalSignal(makeSchedule(config.schedule));
  const count = await datasetSize(config, loaded.file);
  const steps = plannedSteps(count, config.train);
  const dir = experimentFolder(config, outRoot);
  const reusable = await findReusableTraining(outRoot, {
    hash: trainingHash(config),
    exclude: dir,
  });
  const epochs = Math.ceil(steps.total / Math.max(1, steps.perEpoch));
  const parameters = countParameters(config.model);
  return [
    formatConfigSummary(config),
    "",
    `dataset size      ${plural(count, "image")}`,
    `model parameters  ${parameters.toLocaleString("en-US")}` +
    (config.model.conditioning
      ? " without the conditioning path (its size depends on the dataset's label values)"
      : ""),
    `alpha_bar_T       ${alphaBarT.toPrecision(4)}   sqrt(alpha_bar_T) ${
      sqrtAlphaBarT.toPrecision(4)
    }` +
    (sqrtAlphaBarT > 0.1 ? "   (x_T still holds visible signal of x_0)" : ""),
    `training steps    ${steps.total} (${steps.perEpoch} per epoch, ${plural(epochs, "epoch")})` +
    (reusable ? `; would reuse the training of ${reusable.dir}` : ""),
    `run folder        ${dir}`,
  ].join("\n");
}
