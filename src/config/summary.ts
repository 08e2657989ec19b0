/**
 * A compact human summary of a resolved experiment, printed by `--dry-run`.
 * @module
 */
import type { Experiment } from "../../schemas/experiment.ts";

function describeDataset(dataset: Experiment["dataset"]): string {
  switch (dataset.kind) {
    case "avatars":
      return `avatars: ${dataset.count} faces rendered at ${dataset.renderSize}x${dataset.renderSize}`;
    case "folder":
      return `folder: ${dataset.path}${
        dataset.limit === undefined ? "" : ` (first ${dataset.limit} images)`
      }`;
  }
}

/**
 * A multi-line summary: one aligned line each for name, seed, backend, dataset, transform,
 * schedule, model, loss, optimizer, train and sampler (and description when there is one).
 */
export function formatConfigSummary(config: Experiment): string {
  const { transform, schedule, model, optimizer, train, sampler } = config;
  const rows: [string, string][] = [["name", config.name]];
  if (config.description !== undefined) rows.push(["description", config.description]);
  rows.push(
    ["seed", String(config.seed)],
    ["backend", config.backend],
    ["dataset", describeDataset(config.dataset)],
    [
      "transform",
      `resize to ${transform.size}x${transform.size}, ${
        transform.horizontalFlip ? "random horizontal flip" : "no flip"
      }, normalise to [-1, 1]`,
    ],
    [
      "schedule",
      `${schedule.kind}, T=${schedule.timesteps}, beta ${schedule.betaStart} -> ${schedule.betaEnd}`,
    ],
    [
      "model",
      `${model.kind}, width ${model.width}, multipliers [${model.multipliers.join(", ")}], ` +
      `${model.channels} channels, ${model.groups} groups`,
    ],
    ["loss", config.loss.kind],
    [
      "optimizer",
      `${optimizer.kind}, lr ${optimizer.lr}, beta1 ${optimizer.beta1}, ` +
      `beta2 ${optimizer.beta2}, epsilon ${optimizer.epsilon}`,
    ],
    [
      "train",
      [
        `${train.epochs} epochs`,
        `batch ${train.batchSize}`,
        train.shuffle ? "shuffled" : "in order",
        train.dropLast ? "drop last batch" : "keep last batch",
        ...(train.maxSteps === undefined ? [] : [`at most ${train.maxSteps} steps`]),
        `log every ${train.logEvery} steps`,
      ].join(", "),
    ],
    [
      "sampler",
      `${sampler.kind}, ${sampler.variance} variance, ${sampler.initialNoise} x_T, ` +
      `${sampler.stepNoise ? "with" : "without"} step noise, ${sampler.count} images ` +
      `in batches of ${sampler.batchSize}, ${sampler.gridColumns} per grid row`,
    ],
  );
  const width = Math.max(...rows.map(([label]) => label.length));
  return rows.map(([label, text]) => `${label.padEnd(width)}  ${text}`).join("\n");
}
