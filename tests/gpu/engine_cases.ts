/**
 * The small networks of the engine tests (one per option family) and the tfjs models they are
 * compared with: the same parameters, perturbed from PyTorch's initialisation so that the
 * group norms' affine, the null embedding and every bias matter.
 * @module
 */
import { type ModelConfig, ModelSchema } from "../../schemas/experiment.ts";
import type { NamedArray } from "../../src/io/safetensors.ts";
import { createModel, type DenoiseModel, exportParams, importParams } from "../../src/model/mod.ts";
import { deriveRng } from "../../src/rng.ts";

/** Width 4-8, two levels, 8x8 images: each option family of the schema. */
export const FAMILIES: Record<string, unknown> = {
  "linear attention, full middle, 1 res block": {
    width: 8,
    multipliers: [1, 2],
    resBlocks: 1,
    attention: { heads: 2, dimHead: 4 },
  },
  "full attention, linear middle, 3 res blocks": {
    width: 4,
    multipliers: [1, 2],
    groups: 2,
    resBlocks: 3,
    attention: { kind: "full", levels: [1], heads: 2, dimHead: 3 },
    middleAttention: "linear",
  },
  "no attention, odd widths, 3 levels": {
    width: 6,
    multipliers: [1, 2, 1],
    groups: 3,
    resBlocks: 1,
    attention: { kind: "none" },
    middleAttention: "none",
  },
  conditional: {
    width: 8,
    multipliers: [1, 2],
    resBlocks: 1,
    attention: { kind: "none" },
    middleAttention: "full",
    conditioning: {
      attributes: ["hair", "glasses"],
      layers: 2,
      width: 6,
      tokens: 3,
      time: true,
      crossAttention: { levels: [1], middle: true, heads: 2, dimHead: 3 },
    },
  },
};

/** The attribute sizes of the conditional family. */
export const LABEL_SIZES = [3, 2];

/** The model of a family with perturbed parameters, and those parameters. */
export async function familyModel(
  body: unknown,
  overrides: Partial<ModelConfig> = {},
): Promise<{ model: DenoiseModel; params: Map<string, NamedArray>; config: ModelConfig }> {
  const config = ModelSchema.parse({ ...(body as object), ...overrides });
  const labelSizes = config.conditioning ? LABEL_SIZES : undefined;
  const model = createModel(config, { rng: deriveRng(1, "model/init"), labelSizes });
  const params = await exportParams(model);
  const rng = deriveRng(2, "test/perturb");
  for (const [name, a] of params) {
    const data = Float32Array.from(a.data);
    for (let i = 0; i < data.length; i++) data[i] += 0.2 * (rng.uniform() - 0.5);
    params.set(name, { shape: a.shape, data });
  }
  importParams(model, params);
  return { model, params, config };
}
