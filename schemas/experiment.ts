/**
 * The experiment file format: one Zod schema, the single source of truth for validation,
 * defaults, the TypeScript types of every section and the generated JSON Schema
 * (`schemas/experiment.schema.json`, kept current by `deno task schema`).
 *
 * One section maps to one module: `dataset` and `transform` -> src/data, `schedule` ->
 * src/diffusion/schedule.ts, `model` -> src/model, `loss` and `optimizer` and `train` ->
 * src/train, `sampler` -> src/diffusion/sampler.ts.
 * @module
 */
import { z } from "zod";

const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.number().int().min(min).max(max);

/** `dataset`: where the training images come from. */
export const DatasetSchema = z.discriminatedUnion("kind", [
  z.strictObject({
    kind: z.literal("avatars").describe(
      "Manga-like faces rendered from DiceBear's CC0 'lorelei' style, seeded by the experiment seed",
    ),
    count: int(1, 1_000_000).default(12000).describe("Number of faces to render"),
    renderSize: int(8, 512).default(64).describe(
      "Pixel size the faces are rasterised at before the transform resizes them (the manga set is 64x64)",
    ),
  }),
  z.strictObject({
    kind: z.literal("folder").describe(
      "An ImageFolder-style directory of png/jpg/webp images, searched recursively",
    ),
    path: z.string().min(1).describe(
      "Directory of images, relative to the experiment file or absolute",
    ),
    limit: int(1).optional().describe("Use only the first N images (in sorted path order)"),
  }),
]);

/** `transform`: what happens to each image before training (the seed's torchvision pipeline). */
export const TransformSchema = z.strictObject({
  size: int(4, 512).default(32).describe("Resize to size x size (torchvision Resize((H, W)))"),
  horizontalFlip: z.boolean().default(true).describe(
    "Random horizontal flip with probability 0.5, drawn per image per epoch",
  ),
}).describe("Images are always normalised to [-1, 1] (ToTensor + Normalize(0.5, 0.5))");

/** `schedule`: the forward-process variances β_1..β_T. */
export const ScheduleSchema = z.discriminatedUnion("kind", [
  z.strictObject({
    kind: z.literal("linear"),
    timesteps: int(1, 4000).default(200).describe("T, the number of diffusion steps"),
    betaStart: z.number().gt(0).lt(1).default(1e-4).describe("β_1"),
    betaEnd: z.number().gt(0).lt(1).default(0.02).describe("β_T"),
  }),
]);

/** `model`: the denoising network. */
export const ModelSchema = z.strictObject({
  kind: z.literal("unet").default("unet"),
  width: int(1, 1024).default(16).describe("Base width d of the course U-Net"),
  multipliers: z.array(int(1, 64)).min(1).max(8).default([1, 2, 4, 8]).describe(
    "Width multiplier of each resolution level",
  ),
  channels: int(1, 4).default(3).describe("Image channels"),
  groups: int(1, 64).default(4).describe("GroupNorm groups in the residual blocks"),
});

/** `loss`: the training objective on the predicted noise. */
export const LossSchema = z.strictObject({
  kind: z.enum(["l1", "l2"]).default("l1").describe(
    "l1 as in the course notebook, l2 as in the DDPM paper",
  ),
});

/** `optimizer`: the parameter update rule. */
export const OptimizerSchema = z.strictObject({
  kind: z.literal("adam").default("adam"),
  lr: z.number().gt(0).lt(10).default(1e-3),
  beta1: z.number().min(0).lt(1).default(0.9),
  beta2: z.number().min(0).lt(1).default(0.999),
  epsilon: z.number().gt(0).default(1e-8),
});

/** `train`: the training loop. */
export const TrainSchema = z.strictObject({
  epochs: int(0, 100000).default(20),
  batchSize: int(1, 4096).default(32),
  shuffle: z.boolean().default(true),
  dropLast: z.boolean().default(true),
  maxSteps: int(1).optional().describe("Stop after this many optimizer steps (quick runs)"),
  logEvery: int(1).default(100).describe("Print the loss every N steps"),
  checkpointEvery: int(1).default(1).describe(
    "Write a checkpoint every N epochs (and always at the end and on Ctrl-C)",
  ),
});

/** `sampler`: how images are generated after training. */
export const SamplerSchema = z.strictObject({
  kind: z.literal("ddpm").default("ddpm").describe("Ancestral sampling, DDPM Algorithm 2"),
  variance: z.enum(["posterior", "beta"]).default("posterior").describe(
    "σ_t² = β̃_t (posterior, the notebook's) or β_t",
  ),
  initialNoise: z.enum(["gaussian", "zeros"]).default("gaussian").describe(
    "x_T ~ N(0, I), or x_T = 0 (the notebook's question 2)",
  ),
  stepNoise: z.boolean().default(true).describe(
    "Add σ_t z at each step (false: the notebook's question 2)",
  ),
  count: int(1, 4096).default(32).describe("Number of images to sample"),
  batchSize: int(1, 4096).default(32).describe("Images denoised at once"),
  gridColumns: int(1, 256).default(8).describe("Images per row of samples.png"),
});

const sectionsShape = {
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/).max(100).describe(
    "Run name: letters, digits, '.', '_' and '-'; the run folder is outputs/<name>/",
  ),
  description: z.string().optional(),
  seed: int(0, 2 ** 31 - 1).default(0).describe("Experiment seed every random stream derives from"),
  backend: z.enum(["auto", "tensorflow", "webgpu", "wasm", "cpu"]).default("wasm"),
  dataset: DatasetSchema.default({ kind: "avatars", count: 12000, renderSize: 64 }),
  transform: TransformSchema.default({ size: 32, horizontalFlip: true }),
  schedule: ScheduleSchema.default({
    kind: "linear",
    timesteps: 200,
    betaStart: 1e-4,
    betaEnd: 0.02,
  }),
  model: ModelSchema.prefault({}),
  loss: LossSchema.prefault({}),
  optimizer: OptimizerSchema.prefault({}),
  train: TrainSchema.prefault({}),
  sampler: SamplerSchema.prefault({}),
};

/** A complete experiment after `extends` was resolved; defaults are filled in by parsing. */
export const ExperimentSchema = z.strictObject({
  $schema: z.string().optional().describe("Path of experiment.schema.json, for editors"),
  ...sectionsShape,
}).superRefine((cfg, ctx) => {
  const widths = [cfg.model.width, ...cfg.model.multipliers.map((m) => m * cfg.model.width)];
  for (const w of widths) {
    if (w % cfg.model.groups !== 0) {
      ctx.addIssue({
        code: "custom",
        path: ["model", "groups"],
        message: `every level width (${widths.join(", ")}) must be divisible by groups`,
      });
      break;
    }
  }
  const factor = 2 ** (cfg.model.multipliers.length - 1);
  if (cfg.transform.size % factor !== 0) {
    ctx.addIssue({
      code: "custom",
      path: ["transform", "size"],
      message: `must be divisible by ${factor} (the U-Net halves the resolution ${
        cfg.model.multipliers.length - 1
      } times)`,
    });
  }
  if (cfg.model.width % 2 !== 0 || cfg.model.width < 4) {
    ctx.addIssue({
      code: "custom",
      path: ["model", "width"],
      message: "must be even and at least 4 (sinusoidal time embedding of size width)",
    });
  }
  if (cfg.schedule.kind === "linear" && cfg.schedule.betaEnd < cfg.schedule.betaStart) {
    ctx.addIssue({
      code: "custom",
      path: ["schedule", "betaEnd"],
      message: "must be >= betaStart",
    });
  }
});

/** The file as written: every section optional, plus `extends` (a relative path). */
export const ExperimentFileSchema = z.strictObject({
  $schema: z.string().optional(),
  extends: z.string().min(1).optional().describe(
    "Start from another experiment file (path relative to this one) and override its fields",
  ),
  ...sectionsShape,
}).partial();

/** A fully resolved experiment: what a run records in config.json. */
export type Experiment = z.infer<typeof ExperimentSchema>;
/** The `dataset` section. */
export type DatasetConfig = Experiment["dataset"];
/** The `transform` section. */
export type TransformConfig = Experiment["transform"];
/** The `schedule` section. */
export type ScheduleConfig = Experiment["schedule"];
/** The `model` section. */
export type ModelConfig = Experiment["model"];
/** The `loss` section. */
export type LossConfig = Experiment["loss"];
/** The `optimizer` section. */
export type OptimizerConfig = Experiment["optimizer"];
/** The `train` section. */
export type TrainConfig = Experiment["train"];
/** The `sampler` section. */
export type SamplerConfig = Experiment["sampler"];
