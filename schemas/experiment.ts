/**
 * The experiment file format: one Zod schema, the single source of truth for validation,
 * defaults, the TypeScript types of every section and the generated JSON Schema
 * (`schemas/experiment.schema.json`, kept current by `deno task schema`).
 *
 * One section maps to one module: `dataset` and `transform` -> src/data, `schedule` ->
 * src/diffusion/schedule.ts, `model` -> src/model, `loss` and `optimizer` and `train` ->
 * src/train, `sampler` -> src/diffusion/sampler.ts and ddim.ts, `recovery` ->
 * src/diffusion/recovery.ts, `eval` -> src/eval.
 * @module
 */
import { z } from "zod";

const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.number().int().min(min).max(max);

const onBadImage = z.enum(["fail", "skip"]).optional().describe(
  "What a bad image does (corrupt, truncated, empty, not an image, smaller than the crop, a " +
    "missing or malformed CSV): 'fail' (default) stops before training; 'skip' trains on the rest " +
    "and lists every skipped file with its reason in the manifest",
);
const datasetLimit = int(1).optional().describe(
  "Use only the first N images (in sorted path order)",
);
const hexColor = z.string().regex(/^#[0-9a-fA-F]{6}$/, "expected a colour '#rrggbb'");

/** `dataset.attributes.<name>`: how one avatar attribute varies (a component or a colour). */
export const AvatarAttributeSchema = z.strictObject({
  values: z.array(z.string().min(1)).min(1).optional().describe(
    "The values drawn: variant names of a component (e.g. hair ['variant01', 'variant02']), " +
      "'#rrggbb' colours of a colour (hairColor, backgroundColor, ...). Default: every variant, " +
      "or the style's colour; a colour is a label only when given here (backgroundColor always is)",
  ),
  groups: z.record(z.string().min(1), z.array(z.string().min(1)).min(1)).optional().describe(
    "Components only: the label is the group of the drawn variant instead of the variant, e.g. " +
      "mouth {'happy': ['happy*'], 'sad': ['sad*']}; a trailing '*' matches a prefix; every " +
      "drawn variant must fall in exactly one group",
  ),
  probability: z.number().min(0).max(100).optional().describe(
    "Components only: percent of faces that have it (lorelei: glasses 10, earrings 10, beard 5); " +
      "absent faces get the label 'none'",
  ),
  balanced: z.boolean().optional().describe(
    "Exactly equal numbers of each value (or group, and 'none' when optional), in an order drawn " +
      "from the seed, instead of DiceBear's independent draws",
  ),
});

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
    attributes: z.record(z.string(), AvatarAttributeSchema).optional().describe(
      "Which attributes vary and how, by lorelei component (hair, eyes, eyebrows, mouth, nose, " +
        "head, glasses, earrings, beard, freckles, hairAccessories) or colour (hairColor, " +
        "skinColor, ..., backgroundColor). Absent: today's faces, backgrounds from 8 pastels",
    ),
  }),
  z.strictObject({
    kind: z.literal("folder").describe(
      "An ImageFolder-style directory of png/jpg/webp/gif images, searched recursively; images " +
        "in subfolders get their first folder as the label 'class'",
    ),
    path: z.string().min(1).describe(
      "Directory of images, relative to the experiment file or absolute",
    ),
    limit: datasetLimit,
    onBadImage,
  }),
  z.strictObject({
    kind: z.literal("zip").describe(
      "A zip archive of images (e.g. the course's manga.zip), read in place, never extracted; " +
        "images in subfolders of root get their first folder as the label 'class'",
    ),
    path: z.string().min(1).describe("The .zip file, relative to the experiment file or absolute"),
    root: z.string().optional().describe(
      "Folder inside the archive to read (e.g. 'manga/train'); default the whole archive",
    ),
    limit: datasetLimit,
    onBadImage,
  }),
  z.strictObject({
    kind: z.literal("cartoonset").describe(
      "Google's Cartoon Set: csN.png with csN.csv beside it (searched recursively); each CSV line " +
        "'\"name\", index, total' becomes a label with total values",
    ),
    path: z.string().min(1).describe(
      "The Cartoon Set folder, relative to the experiment file or absolute",
    ),
    background: hexColor.optional().describe(
      "Colour transparent pixels are composited on; default '#ffffff'",
    ),
    limit: datasetLimit,
    onBadImage,
  }),
]);

const perChannel = (check: z.ZodNumber) => z.union([check, z.array(check).length(3)]);

/** `transform`: what happens to each image before training (the seed's torchvision pipeline). */
export const TransformSchema = z.strictObject({
  centerCrop: int(1, 16384).optional().describe(
    "First keep the central N x N source pixels (torchvision CenterCrop; seed 004: 360 of 500). " +
      "An image smaller than N is a bad image",
  ),
  size: int(4, 512).default(32).describe("Resize to size x size (torchvision Resize((H, W)))"),
  kernel: z.enum(["nearest", "linear", "cubic", "mitchell", "lanczos2", "lanczos3"]).optional()
    .describe(
      "Resize kernel (sharp); default 'linear': antialiased bilinear, like PIL's BILINEAR",
    ),
  horizontalFlip: z.union([z.boolean(), z.number().min(0).max(1)]).default(true).describe(
    "Random horizontal flip drawn per image per epoch: true (probability 0.5), false, or a " +
      "probability",
  ),
  normalize: z.strictObject({
    mean: perChannel(z.number()).describe("One value or one per channel (RGB)"),
    std: perChannel(z.number().gt(0)).describe("One value or one per channel (RGB)"),
  }).optional().describe(
    "Normalize(mean, std) after ToTensor; default mean = std = 0.5, i.e. [-1, 1]",
  ),
  scale: z.number().gt(0).optional().describe(
    "Multiply the normalised input by this factor b (seed 004's input scaling); default 1",
  ),
}).describe("The order is centerCrop, resize, horizontalFlip, normalize, scale");

const betaRangeShape = {
  timesteps: int(1, 4000).default(200).describe("T, the number of diffusion steps"),
  betaStart: z.number().gt(0).lt(1).default(1e-4).describe("β_1"),
  betaEnd: z.number().gt(0).lt(1).default(0.02).describe("β_T"),
};

/** `schedule`: the forward-process variances β_1..β_T. */
export const ScheduleSchema = z.discriminatedUnion("kind", [
  z.strictObject({
    kind: z.literal("linear").describe("β = linspace(betaStart, betaEnd, T) (Ho et al.)"),
    ...betaRangeShape,
    scaleWithT: z.boolean().default(false).describe(
      "Multiply betaStart and betaEnd by 1000 / T first (Nichol & Dhariwal), so that every T " +
        "ends near pure noise",
    ),
  }),
  z.strictObject({
    kind: z.literal("cosine").describe(
      "Nichol & Dhariwal: ᾱ(t) = f(t) / f(0), f(t) = cos²((t/T + s) / (1 + s) · π/2)",
    ),
    timesteps: betaRangeShape.timesteps,
    s: z.number().min(0).max(1).default(0.008).describe("Offset s of the cosine"),
    maxBeta: z.number().gt(0).lt(1).default(0.999).describe("β_t is clipped at this value"),
  }),
  z.strictObject({
    kind: z.literal("quadratic").describe("β = linspace(√betaStart, √betaEnd, T)²"),
    ...betaRangeShape,
  }),
  z.strictObject({
    kind: z.literal("sigmoid").describe(
      "β = sigmoid(linspace(-6, 6, T)) · (betaEnd - betaStart) + betaStart",
    ),
    ...betaRangeShape,
  }),
]);

/** `model.attention`: the attention block of each resolution level. */
export const AttentionSchema = z.strictObject({
  kind: z.enum(["linear", "full", "none"]).default("linear").describe(
    "linear: the course U-Net's LinearAttention; full: softmax attention over the HW tokens",
  ),
  levels: z.union([z.literal("all"), z.array(int(0, 7)).max(8)]).default("all").describe(
    "Levels that get attention: 'all', or level indices (level i runs at size / 2^i: " +
      "for 64x64 images [2] is 16x16)",
  ),
  heads: int(1, 64).default(4).describe("Heads of every attention block (middle included)"),
  dimHead: int(1, 1024).default(32).describe("Width of each head"),
});

/** `model.conditioning.crossAttention`: multi-head cross-attention to the label tokens. */
export const CrossAttentionSchema = z.strictObject({
  levels: z.union([z.literal("all"), z.array(int(0, 7)).max(8)]).default("all").describe(
    "Levels with cross-attention after their last residual block, down and up ('all' or indices)",
  ),
  middle: z.boolean().default(true).describe("Cross-attention between the middle blocks too"),
  heads: int(1, 64).default(4),
  dimHead: int(1, 1024).default(32),
});

/** `model.conditioning`: labels in, the projection tau, where the embedding enters the U-Net. */
export const ConditioningSchema = z.strictObject({
  attributes: z.array(z.string().min(1)).min(1).max(64).describe(
    "Dataset label attributes the model is conditioned on (avatars: `hair`, `hairColor`...; " +
      "Cartoon Set: the CSV names; folders: `class`), in this order",
  ),
  encoding: z.enum(["onehot", "integer"]).default("onehot").describe(
    "onehot: the concatenated one-hot vectors (seed 004's choice); integer: the raw indices, one " +
      "number per attribute (its first attempt)",
  ),
  layers: int(1, 8).default(2).describe(
    "Linear layers of the projection tau (GELU between them)",
  ),
  width: int(1, 4096).default(64).describe("Width of every token tau outputs"),
  tokens: int(1, 64).default(4).describe(
    "Tokens tau outputs (its last layer has tokens x width outputs): the keys of cross-attention",
  ),
  time: z.boolean().default(true).describe(
    "Add a linear projection of the label embedding to the time embedding",
  ),
  crossAttention: CrossAttentionSchema.optional().describe(
    "Multi-head cross-attention from the image features to the label tokens",
  ),
  pUncond: z.number().min(0).max(1).default(0.1).describe(
    "Training: probability that an example's labels are replaced by the learned null " +
      "embedding (classifier-free guidance; stream train/uncond/step-<k>)",
  ),
});

/** `model`: the denoising network. */
export const ModelSchema = z.strictObject({
  kind: z.literal("unet").default("unet"),
  width: int(1, 1024).default(16).describe("Base width d of the course U-Net"),
  multipliers: z.array(int(1, 64)).min(1).max(8).default([1, 2, 4, 8]).describe(
    "Width multiplier of each resolution level",
  ),
  channels: int(1, 4).default(3).describe("Image channels"),
  groups: int(1, 64).default(4).describe("GroupNorm groups in the residual blocks"),
  resBlocks: int(1, 8).default(2).describe(
    "Residual blocks per level on the way down (each keeps a skip; the way up has as many)",
  ),
  attention: AttentionSchema.prefault({}).describe("Attention at the resolution levels"),
  middleAttention: z.enum(["full", "linear", "none"]).default("full").describe(
    "Attention between the two middle residual blocks",
  ),
  dropout: z.number().min(0).lt(1).default(0).describe(
    "Dropout rate inside every residual block, before its second convolution (training only)",
  ),
  prediction: z.enum(["eps", "x0", "v"]).default("eps").describe(
    "What the network predicts and is trained on: the noise ε (DDPM), x_0, or " +
      "v = √ᾱ_t ε - √(1 - ᾱ_t) x_0 (Salimans & Ho)",
  ),
  conditioning: ConditioningSchema.optional().describe(
    "A conditional model (seed 004): labels, their projection tau, where they enter, pUncond",
  ),
});

/** `loss`: the distance between the network output and its target (`model.prediction`). */
export const LossSchema = z.discriminatedUnion("kind", [
  z.strictObject({ kind: z.literal("l1").describe("mean |d|, the course notebook's") }),
  z.strictObject({ kind: z.literal("l2").describe("mean d², the DDPM paper's") }),
  z.strictObject({
    kind: z.literal("huber").describe(
      "mean of 0.5 d² where |d| <= delta, else delta (|d| - 0.5 delta) (smooth L1 at delta 1)",
    ),
    delta: z.number().gt(0).default(1).describe("Where the loss turns from quadratic to linear"),
  }),
]);

/** `optimizer.ema`: an exponential moving average of the weights, used for sampling. */
export const EmaSchema = z.strictObject({
  decay: z.number().gt(0).lt(1).default(0.9999).describe(
    "After each step k > startStep: ema = decay · ema + (1 - decay) · weights",
  ),
  startStep: int(0).default(0).describe("Up to this step the average is a copy of the weights"),
});

/** `optimizer`: the parameter update rule, its learning-rate schedule and the weight average. */
export const OptimizerSchema = z.strictObject({
  kind: z.literal("adam").default("adam"),
  lr: z.number().gt(0).lt(10).default(1e-3),
  beta1: z.number().min(0).lt(1).default(0.9),
  beta2: z.number().min(0).lt(1).default(0.999),
  epsilon: z.number().gt(0).default(1e-8),
  warmupSteps: int(0).default(0).describe(
    "Linear warmup: step k uses lr · k / warmupSteps up to warmupSteps (the DDPM paper: 5000)",
  ),
  lrDecay: z.enum(["none", "cosine"]).default("none").describe(
    "After warmup: a constant lr, or a cosine decay reaching minLr at the last training step",
  ),
  minLr: z.number().min(0).default(0).describe("The lr at the end of the cosine decay"),
  clipGradNorm: z.number().gt(0).optional().describe(
    "Scale the gradients down to this global L2 norm when above it (the DDPM paper: 1)",
  ),
  ema: EmaSchema.optional().describe(
    "Keep an exponential moving average of the weights (checkpointed) and sample with it",
  ),
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
  workers: int(0, 64).default(1).describe(
    "Worker threads besides the main one that compute a share of each batch (wasm and cpu " +
      "backends). Results are byte-identical for a given count, not across counts",
  ),
  microBatch: int(1, 4096).default(8).describe(
    "At most this many examples per forward/backward pass (gradient accumulation): bounds " +
      "memory; like workers it changes the summation order, so it is part of the config",
  ),
});

/** `sampler.trajectory`: the reverse process of a few samples, as a strip PNG and a GIF. */
export const TrajectorySchema = z.strictObject({
  count: int(1, 64).default(6).describe(
    "Samples whose reverse process is saved: the first ones of the first batch",
  ),
  frames: int(2, 1000).default(10).describe(
    "Columns of the strip, evenly spaced over the states visited (x_T first, the sample last)",
  ),
  at: z.array(int(0, 4000)).min(1).max(1000).optional().describe(
    "Instead of `frames`: the t shown (T is x_T, 0 the sample); each shows the first state " +
      "visited at or below it (ddim visits only its subsequence)",
  ),
  gifFrames: int(0, 4000).default(50).describe(
    "Frames of the animated GIF (0: none), evenly spaced over the states visited",
  ),
  gifDelayMs: int(10, 10000).default(80).describe("Time each GIF frame is shown"),
});

const labelValue = z.union([int(0), z.string().min(1)]);

/** `sampler.labels`: what a conditional model generates. */
export const LabelRequestSchema = z.discriminatedUnion("kind", [
  z.strictObject({
    kind: z.literal("dataset").describe("Each image's labels drawn from the dataset's images"),
  }),
  z.strictObject({
    kind: z.literal("fixed").describe(
      "These attributes fixed for every image, the others drawn from the dataset",
    ),
    values: z.record(z.string(), labelValue).describe(
      'attribute -> value, by index or by value name ({"glasses": 1, "hairColor": "#b55239"})',
    ),
  }),
  z.strictObject({
    kind: z.literal("grid").describe(
      "One row per value of `attribute` (gridColumns images each; sampler.count is ignored), " +
        "the other attributes drawn from the dataset, or fixed by `values`",
    ),
    attribute: z.string().min(1),
    values: z.record(z.string(), labelValue).optional(),
  }),
]);

/** `sampler`: how images are generated after training. */
export const SamplerSchema = z.strictObject({
  kind: z.enum(["ddpm", "ddim"]).default("ddpm").describe(
    "ddpm: ancestral sampling, DDPM Algorithm 2, T steps; ddim: Song et al.'s sampler on a " +
      "subsequence of `steps` timesteps",
  ),
  variance: z.enum(["posterior", "beta"]).default("posterior").describe(
    "ddpm: σ_t² = β̃_t (posterior, the notebook's) or β_t",
  ),
  initialNoise: z.enum(["gaussian", "zeros"]).default("gaussian").describe(
    "x_T ~ N(0, I), or x_T = 0 (the notebook's question 2)",
  ),
  stepNoise: z.boolean().default(true).describe(
    "Add σ_t z at each step (false: the notebook's question 2)",
  ),
  clipX0: z.boolean().default(false).describe(
    "Clip the predicted x_0 to [-1, 1] at every step; x_{t-1} then follows from the clipped x̂_0",
  ),
  steps: int(1, 4000).optional().describe(
    "ddim only: sampling steps (default T); step k uses t = round(k T / steps), k = steps..1",
  ),
  eta: z.number().min(0).max(1).default(0).describe(
    "ddim only: scale of the step noise (0: deterministic; 1: the posterior variance)",
  ),
  // Optional rather than defaulted, so that configs written before it keep their hashes.
  engine: z.enum(["tfjs", "onnxruntime"]).optional().describe(
    "What runs the network while sampling (default tfjs): tfjs (the run's backend), or ONNX Runtime " +
      "(onnxruntime-node: the model exported to checkpoint/model.onnx; CUDA or a hardware " +
      "WebGPU adapter when present, else the CPU; falls back to tfjs when it cannot load)",
  ),
  count: int(1, 4096).default(32).describe("Number of images to sample"),
  batchSize: int(1, 4096).default(32).describe("Images denoised at once"),
  gridColumns: int(1, 256).default(8).describe("Images per row of samples.png"),
  trajectory: TrajectorySchema.optional().describe(
    "Save the reverse process of a few samples (trajectory.png, trajectory.gif)",
  ),
  labels: LabelRequestSchema.optional().describe(
    "Conditional models: what to generate (absent: labels drawn from the dataset)",
  ),
  guidance: z.array(z.number().min(0).max(100)).min(1).max(16).optional().describe(
    "Conditional models: classifier-free guidance weights w, eps = (1 + w) eps(x, c) - " +
      "w eps(x, null) (w = 0: the conditional model alone; diffusers' scale is 1 + w); one " +
      "samples grid per w, samples-w<w>.png (default [0])",
  ),
  measure: z.strictObject({
    resize: int(75, 1024).default(128).describe(
      "Side the images are resized to before the KID feature network (299: its native size)",
    ),
    kidSubsets: int(1, 10000).default(100),
    kidSubsetSize: int(2, 100000).default(1000),
    judgeSteps: int(1, 100000).default(2000).describe(
      "Training steps of the attribute judge (cached by dataset content)",
    ),
  }).optional().describe(
    "Conditional models: for each guidance weight, the attribute judge's accuracy on each " +
      "conditioned attribute and KID against the dataset (guidance.md, guidance.json)",
  ),
});

/** `recovery`: noise real images to t, then run the reverse process back (seed 002). */
export const RecoverySchema = z.strictObject({
  count: int(1, 256).default(8).describe("Training images (the first ones, unflipped)"),
  t: z.array(int(1, 4000)).min(1).max(16).describe(
    "Forward steps: x_t ~ q(x_t | x_0) for each t, then the reverse process from t to 0 with " +
      "σ² = β and with σ² = β̃ (same noise draws)",
  ),
  stepNoise: z.boolean().default(true).describe("Add σ_t z in the reverse steps"),
});

/** `eval`: sample-quality numbers (KID, FID, attribute judge) during and after training. */
export const EvalSchema = z.strictObject({
  every: int(1).optional().describe(
    "Evaluate every N epochs during training (eval.jsonl); absent: only at the end",
  ),
  samples: int(2, 50000).default(256).describe(
    "Images sampled per evaluation (with the sampler section); the reference set is as many " +
      "training images, and the real-vs-real floor two disjoint sets of that size",
  ),
  metrics: z.array(z.enum(["kid", "fid", "diversity", "judge"])).min(1).default(["kid", "fid"])
    .describe(
      "kid: kernel inception distance (mean ± std over subsets); fid: Fréchet distance at equal " +
        "N; diversity: mean pairwise feature distance of the samples (and, as <name>_real, of " +
        "the reference images); judge: total variation between the attribute distributions that a classifier trained " +
        "on the real images predicts for samples and for real images (labelled datasets only)",
    ),
  resize: int(75, 1024).default(299).describe(
    "Side the images are resized to (bilinear) before the feature network; 299 is its native " +
      "size, 128 is about 10 times faster (recorded with the numbers)",
  ),
  features: z.string().min(1).optional().describe(
    "A tfjs model.json (layers or graph model) to use as the feature network instead of the " +
      "nsfwjs InceptionV3 at mixed5 (metrics are then named kid/fid instead of kid_iv3m5/fid_iv3m5)",
  ),
  kidSubsets: int(1, 10000).default(100).describe("KID: number of random subsets"),
  kidSubsetSize: int(2, 100000).default(1000).describe(
    "KID: subset size, capped at half the smaller set so that the subsets differ and their " +
      "standard deviation is an error bar",
  ),
  floor: z.boolean().default(true).describe(
    "Also compute the metrics between two disjoint sets of training images (what 'good' means)",
  ),
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
    scaleWithT: false,
  }),
  model: ModelSchema.prefault({}),
  loss: LossSchema.default({ kind: "l1" }),
  optimizer: OptimizerSchema.prefault({}),
  train: TrainSchema.prefault({}),
  sampler: SamplerSchema.prefault({}),
  recovery: RecoverySchema.optional().describe(
    "Recovery figure (recovery.png): columns original | x_t | reverse with β | reverse with β̃",
  ),
  eval: EvalSchema.optional().describe(
    "Sample-quality metrics: eval.jsonl during training, the manifest summary at the end",
  ),
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
  const crop = cfg.transform.centerCrop;
  if (crop !== undefined && cfg.dataset.kind === "avatars" && crop > cfg.dataset.renderSize) {
    ctx.addIssue({
      code: "custom",
      path: ["transform", "centerCrop"],
      message: `must be <= dataset.renderSize (${cfg.dataset.renderSize})`,
    });
  }
  checkSections(cfg, (path, message) => ctx.addIssue({ code: "custom", path, message }));
});

/** Cross-field checks of the schedule, model, sampler and recovery sections. */
function checkSections(
  cfg: {
    schedule: z.infer<typeof ScheduleSchema>;
    model: z.infer<typeof ModelSchema>;
    sampler: z.infer<typeof SamplerSchema>;
    recovery?: z.infer<typeof RecoverySchema>;
  },
  issue: (path: (string | number)[], message: string) => void,
): void {
  const { schedule, model, sampler, recovery } = cfg;
  const T = schedule.timesteps;
  if (schedule.kind !== "cosine") {
    if (schedule.betaEnd < schedule.betaStart) {
      issue(["schedule", "betaEnd"], "must be >= betaStart");
    }
    if (schedule.kind === "linear" && schedule.scaleWithT && schedule.betaEnd * 1000 / T >= 1) {
      issue(
        ["schedule", "scaleWithT"],
        `betaEnd · 1000 / T = ${schedule.betaEnd * 1000 / T} must be < 1 (use a larger T)`,
      );
    }
  }
  const levels = model.multipliers.length;
  if (model.attention.levels !== "all") {
    model.attention.levels.forEach((level, i) => {
      if (level >= levels) {
        issue(
          ["model", "attention", "levels", i],
          `level ${level} does not exist (the U-Net has levels 0..${levels - 1})`,
        );
      }
    });
  }
  if (sampler.steps !== undefined) {
    if (sampler.kind !== "ddim") {
      issue(["sampler", "steps"], "only a ddim sampler takes steps (set sampler.kind to ddim)");
    } else if (sampler.steps > T) {
      issue(["sampler", "steps"], `must be <= schedule.timesteps (${T})`);
    }
  }
  const trajectory = sampler.trajectory;
  if (trajectory) {
    const most = Math.min(sampler.count, sampler.batchSize);
    if (trajectory.count > most) {
      issue(
        ["sampler", "trajectory", "count"],
        `must be <= ${most} (the first batch of samples)`,
      );
    }
    trajectory.at?.forEach((t, i) => {
      if (t > T) issue(["sampler", "trajectory", "at", i], `must be <= schedule.timesteps (${T})`);
    });
  }
  recovery?.t.forEach((t, i) => {
    if (t > T) issue(["recovery", "t", i], `must be <= schedule.timesteps (${T})`);
  });
  const cond = model.conditioning;
  for (const field of ["labels", "guidance", "measure"] as const) {
    if (sampler[field] !== undefined && !cond) {
      issue(["sampler", field], "only a conditional model takes it (set model.conditioning)");
    }
  }
  const cross = cond?.crossAttention;
  if (cross && cross.levels !== "all") {
    cross.levels.forEach((level, i) => {
      if (level >= levels) {
        issue(
          ["model", "conditioning", "crossAttention", "levels", i],
          `level ${level} does not exist (the U-Net has levels 0..${levels - 1})`,
        );
      }
    });
  }
  if (cond && new Set(cond.attributes).size !== cond.attributes.length) {
    issue(["model", "conditioning", "attributes"], "an attribute is listed twice");
  }
}

/**
 * `sweep`: the runs of a sweep (src/sweep). Every other key is a `--set` path mapped to its
 * values; points are their grid (or zip), each repeated for every seed. Not part of a run's
 * resolved config: a point's config is the file's with that point's overrides applied.
 */
export const SweepSchema = z.object({
  mode: z.enum(["grid", "zip"]).default("grid").describe(
    "grid: every combination of the values (the last path varies fastest); zip: the i-th " +
      "value of every path together (the lists must have the same length)",
  ),
  seeds: z.array(int(0, 2 ** 31 - 1)).min(1).optional().describe(
    "Run every point once per seed (default: the experiment's seed)",
  ),
}).catchall(z.array(z.unknown()).min(1)).describe(
  'A map from a field path to its values, e.g. {"schedule.timesteps": [100, 200, 300, 500]}; ' +
    "each point is an ordinary run with those overrides (deno task sweep)",
);

/** `launcher.slurm`: the resources of each array task when a sweep runs with `--launcher slurm`. */
export const SlurmSchema = z.strictObject({
  partition: z.string().min(1).optional().describe("#SBATCH --partition"),
  gpus: int(0, 64).optional().describe("#SBATCH --gpus (GPUs per point)"),
  cpus: int(1, 1024).optional().describe("#SBATCH --cpus-per-task"),
  memory: z.string().regex(/^[0-9]+[KMGT]?$/).optional().describe(
    "#SBATCH --mem, e.g. 8G",
  ),
  time: z.string().regex(/^[0-9:-]+$/).optional().describe(
    "#SBATCH --time, e.g. 02:00:00 or 1-00:00:00",
  ),
  signal: int(0, 86400).optional().describe(
    "Seconds before the time limit at which Slurm warns a point (#SBATCH --signal=B:USR2@N " +
      "and --requeue): it finishes its step, writes a checkpoint and requeues itself, and " +
      "resumes when Slurm starts it again. Default 300, or a quarter of `time` when that is " +
      "shorter than 20 minutes; 0: no warning (a point killed at its limit resumes when the " +
      "sweep runs again). Slurm may send it up to a minute early",
  ),
  extra: z.array(z.string().min(1)).default([]).describe(
    'More #SBATCH lines, written as given after "#SBATCH ", e.g. "--account=lab"',
  ),
  setup: z.array(z.string()).default([]).describe(
    'Shell lines run before the point, e.g. "module load cuda"',
  ),
});

/** `launcher`: how `deno task sweep` starts its points away from this process. */
export const LauncherSchema = z.strictObject({
  slurm: SlurmSchema.optional().describe("sbatch array job resources (--launcher slurm)"),
});

/** The file as written: every section optional, plus `extends` (a relative path). */
export const ExperimentFileSchema = z.strictObject({
  $schema: z.string().optional(),
  extends: z.string().min(1).optional().describe(
    "Start from another experiment file (path relative to this one) and override its fields",
  ),
  ...sectionsShape,
  sweep: SweepSchema.optional(),
  launcher: LauncherSchema.optional(),
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
/** The `sampler.trajectory` field. */
export type TrajectoryConfig = NonNullable<SamplerConfig["trajectory"]>;
/** The `model.attention` field. */
export type AttentionConfig = ModelConfig["attention"];
/** The `model.conditioning` field (absent: an unconditional model). */
export type ConditioningConfig = NonNullable<ModelConfig["conditioning"]>;
/** The `sampler.labels` field. */
export type LabelRequest = NonNullable<SamplerConfig["labels"]>;
/** The `optimizer.ema` field. */
export type EmaConfig = NonNullable<OptimizerConfig["ema"]>;
/** The `eval` section (absent: no metrics). */
export type EvalConfig = NonNullable<Experiment["eval"]>;
/** The `recovery` section (absent: no recovery figure). */
export type RecoveryConfig = NonNullable<Experiment["recovery"]>;
/** The `sweep` field of an experiment file, defaults applied. */
export type SweepConfig = z.infer<typeof SweepSchema>;
/** The `launcher.slurm` field of an experiment file, defaults applied. */
export type SlurmConfig = z.infer<typeof SlurmSchema>;
