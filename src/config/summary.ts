/**
 * A compact human summary of a resolved experiment, printed by `--dry-run`.
 * @module
 */
import type { Experiment } from "../../schemas/experiment.ts";
import { describeTransform } from "../data/transform.ts";
import { describeSchedule } from "../diffusion/schedule.ts";

function describeDataset(dataset: Experiment["dataset"]): string {
  switch (dataset.kind) {
    case "avatars":
      return `avatars: ${dataset.count} faces rendered at ${dataset.renderSize}x${dataset.renderSize}` +
        (dataset.attributes ? `, attributes ${Object.keys(dataset.attributes).join(", ")}` : "");
    case "folder":
    case "zip":
    case "cartoonset":
      return `${dataset.kind}: ${dataset.path}${
        dataset.kind === "zip" && dataset.root ? ` (root ${dataset.root})` : ""
      }${dataset.limit === undefined ? "" : ` (first ${dataset.limit} images)`}${
        dataset.onBadImage === "skip" ? ", bad images skipped" : ""
      }`;
  }
}

function describeModel(model: Experiment["model"], size: number): string {
  const levels = model.multipliers.length;
  const resolutions = Array.from({ length: levels }, (_, i) => size / 2 ** i);
  const at = model.attention.levels === "all"
    ? "all levels"
    : model.attention.levels.map((l) => `${resolutions[l]}x${resolutions[l]}`).join(", ");
  return `${model.kind}, width ${model.width}, multipliers [${model.multipliers.join(", ")}], ` +
    `${model.channels} channels, ${model.resBlocks} res blocks per level, ${model.groups} groups, ` +
    `attention ${model.attention.kind}${model.attention.kind === "none" ? "" : ` at ${at}`}, ` +
    `middle attention ${model.middleAttention}, dropout ${model.dropout}, predicts ${model.prediction}`;
}

/** `1 step`, `2 steps`: a count and its noun, plural unless the count is 1. */
export function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

function describeOptimizer(o: Experiment["optimizer"]): string {
  return [
    `${o.kind}, lr ${o.lr}, beta1 ${o.beta1}, beta2 ${o.beta2}, epsilon ${o.epsilon}`,
    ...(o.warmupSteps > 0 ? [`warmup ${plural(o.warmupSteps, "step")}`] : []),
    ...(o.lrDecay === "cosine" ? [`cosine decay to ${o.minLr}`] : []),
    ...(o.clipGradNorm === undefined ? [] : [`gradients clipped at norm ${o.clipGradNorm}`]),
    ...(o.ema ? [`EMA ${o.ema.decay} from step ${o.ema.startStep}`] : []),
  ].join(", ");
}

/**
 * One line about a sampler, e.g. `ddim, 50 of 1000 steps, eta 0, x_T gaussian, x0 clipped,
 * 32 images in batches of 32, 8 per grid row` (the dry run's summary and the run's log).
 */
export function describeSampler(s: Experiment["sampler"], timesteps: number): string {
  const head = s.kind === "ddim"
    ? `ddim, ${s.steps ?? timesteps} of ${plural(timesteps, "step")}, eta ${s.eta}`
    : `ddpm, ${plural(timesteps, "step")}, ${s.variance} variance, ` +
      `${s.stepNoise ? "with" : "without"} step noise`;
  return `${head}, ${s.initialNoise} x_T${s.clipX0 ? ", x0 clipped to [-1, 1]" : ""}, ` +
    `${plural(s.count, "image")} in batches of ${s.batchSize}, ${s.gridColumns} per grid row` +
    (s.trajectory ? `, trajectory of ${s.trajectory.count}` : "");
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
    ["transform", describeTransform(transform)],
    [
      "schedule",
      describeSchedule(schedule),
    ],
    ["model", describeModel(model, transform.size)],
    ["loss", config.loss.kind === "huber" ? `huber, delta ${config.loss.delta}` : config.loss.kind],
    ["optimizer", describeOptimizer(optimizer)],
    [
      "train",
      [
        plural(train.epochs, "epoch"),
        `batch ${train.batchSize}`,
        train.shuffle ? "shuffled" : "in order",
        train.dropLast ? "drop last batch" : "keep last batch",
        ...(train.maxSteps === undefined ? [] : [`at most ${plural(train.maxSteps, "step")}`]),
        train.logEvery === 1 ? "log every step" : `log every ${train.logEvery} steps`,
      ].join(", "),
    ],
    ["sampler", describeSampler(sampler, schedule.timesteps)],
    ...(config.recovery
      ? [[
        "recovery",
        `${config.recovery.count} images noised to t = ${config.recovery.t.join(", ")}, ` +
        `denoised with beta and beta-tilde${config.recovery.stepNoise ? "" : " (no step noise)"}`,
      ] as [string, string]]
      : []),
  );
  const width = Math.max(...rows.map(([label]) => label.length));
  return rows.map(([label, text]) => `${label.padEnd(width)}  ${text}`).join("\n");
}
