/**
 * Generates `schemas/experiment.schema.json`, the JSON Schema editors use to complete and check
 * experiment files, from the Zod schema of a file as written. Run `deno task schema` after
 * changing `schemas/experiment.ts`; a test fails while the file on disk is stale.
 * @module
 */
import { z } from "zod";
import { ExperimentFileSchema } from "./experiment.ts";

/** The `$id` of the generated schema. */
export const EXPERIMENT_SCHEMA_ID = "urn:ddpm-lab:experiment.schema.json";

/**
 * The JSON Schema of an experiment file as written (`io: "input"`: defaults are documented, not
 * required), with a title and an `$id`. Every section is a patch over the layers below it (the
 * defaults, the `extends` chain), so no key is required and a section may omit its `kind`: the
 * kind options become `anyOf` (a partial section may fit several).
 */
export function experimentJsonSchema(): Record<string, unknown> {
  const generated = z.toJSONSchema(ExperimentFileSchema, { io: "input" });
  const { $schema, ...rest } = asPatch(generated) as Record<string, unknown>;
  return {
    $schema,
    $id: EXPERIMENT_SCHEMA_ID,
    title: "ddpm-lab experiment",
    description:
      "A DDPM training experiment: dataset, transform, noise schedule, model, loss, optimizer, " +
      "training loop and sampler. Everything but `name` has a default, and `extends` starts " +
      "from another experiment file (which may give the name).",
    ...rest,
  };
}

/** A copy of a JSON Schema without `required` lists, `oneOf` turned into `anyOf`. */
function asPatch(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(asPatch);
  if (typeof schema !== "object" || schema === null) return schema;
  const patch: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key === "required") continue;
    patch[key === "oneOf" ? "anyOf" : key] = key === "default" ? value : asPatch(value);
  }
  return patch;
}

/** The text written to `schemas/experiment.schema.json`: 2-space JSON and a final newline. */
export function experimentJsonSchemaText(): string {
  return `${JSON.stringify(experimentJsonSchema(), null, 2)}\n`;
}

if (import.meta.main) {
  const target = new URL("./experiment.schema.json", import.meta.url);
  await Deno.writeTextFile(target, experimentJsonSchemaText());
  console.log(`wrote ${target.pathname}`);
}
