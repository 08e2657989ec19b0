/**
 * What a conditional model generates (`sampler.labels`) and which dataset attributes it is
 * conditioned on (`model.conditioning.attributes`), resolved against the dataset's labels
 * before the run folder exists, so a wrong name fails with exit code 2 and nothing written.
 * @module
 */
import type { ConditioningConfig, Experiment, LabelRequest } from "../../schemas/experiment.ts";
import type { Attribute, LabelSet } from "../data/mod.ts";
import { UserError } from "../errors.ts";
import { deriveRng } from "../rng.ts";

/** The conditioned attributes of a dataset: their descriptions and their columns in its labels. */
export interface ConditionedAttributes {
  /** The attributes, in `model.conditioning.attributes` order. */
  attributes: Attribute[];
  /** Index of each in the dataset's `LabelSet.attributes`. */
  columns: number[];
}

/** The dataset's attributes named by `conditioning.attributes`; a UserError names a missing one. */
export function conditionedAttributes(
  conditioning: Pick<ConditioningConfig, "attributes">,
  options: { labels: LabelSet | undefined; file?: string },
): ConditionedAttributes {
  const set = options.labels;
  const names = set?.attributes.map((a) => a.name) ?? [];
  const columns = conditioning.attributes.map((name, i) => {
    const column = names.indexOf(name);
    if (column < 0) {
      throw new UserError(
        set ? `the dataset has no label attribute ${name}` : "the dataset has no labels",
        {
          file: options.file,
          path: `model.conditioning.attributes.${i}`,
          expected: set ? `one of ${names.join(", ")}` : "a labelled dataset",
        },
      );
    }
    return column;
  });
  return { attributes: columns.map((c) => set!.attributes[c]), columns };
}

/** The labels of every image to sample, and what each row of samples.png asked for. */
export interface LabelPlan {
  /** Number of images (sampler.count, or values x gridColumns for a grid). */
  count: number;
  /** Row-major [count, A] value indices, A the conditioned attributes. */
  labels: Int32Array;
  /** One caption per row of samples.png. */
  rows: string[];
  /** Each image's labels by attribute name (value names where known), for the legend file. */
  legend: Record<string, string>[];
  /** The gridded attribute, when the request is a grid. */
  gridAttribute?: string;
}

const valueName = (a: Attribute, v: number): string => a.values?.[v] ?? String(v);

function resolveValue(
  attribute: Attribute,
  value: number | string,
  where: { path: string; file?: string },
): number {
  const index = typeof value === "number" ? value : (attribute.values ?? []).indexOf(value);
  if (index < 0 || index >= attribute.count) {
    const names = attribute.values ? attribute.values.join(", ") : "";
    throw new UserError(`${attribute.name} has no value ${JSON.stringify(value)}`, {
      ...where,
      expected: `an index 0..${attribute.count - 1}${names ? ` or one of ${names}` : ""}`,
    });
  }
  return index;
}

/**
 * The labels to sample: each image first takes the labels of a dataset image drawn from the
 * `sample/labels` stream, then the request's fixed values, then (grid) the row's value.
 */
export function planLabels(
  request: LabelRequest | undefined,
  options: {
    conditioned: ConditionedAttributes;
    labels: LabelSet;
    count: number;
    columns: number;
    seed: number;
    file?: string;
  },
): LabelPlan {
  const req = request ?? { kind: "dataset" as const };
  const { attributes, columns: cols } = options.conditioned;
  const a = attributes.length;
  const names = attributes.map((x) => x.name);
  const fixed = new Map<number, number>();
  const values = req.kind === "dataset" ? undefined : req.values;
  for (const [name, value] of Object.entries(values ?? {})) {
    const j = names.indexOf(name);
    const path = `sampler.labels.values.${name}`;
    if (j < 0) {
      throw new UserError(`${name} is not a conditioned attribute`, {
        file: options.file,
        path,
        expected: `one of ${names.join(", ")}`,
      });
    }
    fixed.set(j, resolveValue(attributes[j], value, { path, file: options.file }));
  }
  let grid = -1;
  if (req.kind === "grid") {
    grid = names.indexOf(req.attribute);
    if (grid < 0) {
      throw new UserError(`${req.attribute} is not a conditioned attribute`, {
        file: options.file,
        path: "sampler.labels.attribute",
        expected: `one of ${names.join(", ")}`,
      });
    }
  }
  const count = grid >= 0 ? attributes[grid].count * options.columns : options.count;
  const rng = deriveRng(options.seed, "sample/labels");
  const pool = options.labels.labels[0]?.length ?? 0;
  const labels = new Int32Array(count * a);
  for (let i = 0; i < count; i++) {
    const source = rng.int(pool);
    for (let j = 0; j < a; j++) labels[i * a + j] = options.labels.labels[cols[j]][source];
    for (const [j, v] of fixed) labels[i * a + j] = v;
    if (grid >= 0) labels[i * a + grid] = Math.floor(i / options.columns);
  }
  const fixedText = [...fixed].map(([j, v]) => `${names[j]}=${valueName(attributes[j], v)}`);
  const rowCount = Math.ceil(count / options.columns);
  const rows = Array.from({ length: rowCount }, (_, r) => {
    if (grid >= 0) {
      return [`${names[grid]}=${valueName(attributes[grid], r)}`, ...fixedText].join(", ");
    }
    return fixedText.length > 0 ? fixedText.join(", ") : "labels of dataset images";
  });
  const legend = Array.from({ length: count }, (_, i) => {
    const entry: Record<string, string> = {};
    attributes.forEach((x, j) => entry[x.name] = valueName(x, labels[i * a + j]));
    return entry;
  });
  return { count, labels, rows, legend, ...(grid >= 0 ? { gridAttribute: names[grid] } : {}) };
}

/** A conditional experiment resolved against its dataset: attributes, their sizes, the plan. */
export interface ResolvedConditioning {
  /** The conditioned attributes and their columns in the dataset's labels. */
  conditioned: ConditionedAttributes;
  /** Values of each conditioned attribute (the network's label sizes). */
  labelSizes: number[];
  /** What `sampler.labels` asks to sample. */
  plan: LabelPlan;
}

/**
 * The conditioning of `config` against the dataset's labels (`run`, `sample` and `eval` share
 * it), or undefined for an unconditional model. Throws a UserError naming the file and field
 * when an attribute or a requested value does not exist.
 */
export function resolveConditioning(
  config: Pick<Experiment, "model" | "sampler" | "seed">,
  options: { labels: LabelSet | undefined; file?: string },
): ResolvedConditioning | undefined {
  const conditioning = config.model.conditioning;
  if (!conditioning) return undefined;
  const conditioned = conditionedAttributes(conditioning, options);
  const plan = planLabels(config.sampler.labels, {
    conditioned,
    labels: options.labels!, // conditionedAttributes threw without labels
    count: config.sampler.count,
    columns: config.sampler.gridColumns,
    seed: config.seed,
    file: options.file,
  });
  return { conditioned, labelSizes: conditioned.attributes.map((a) => a.count), plan };
}
