/**
 * Walks the Zod experiment schema along a JSON path, next to the value found there, to tell
 * which keys an object accepts (for the kind a discriminated section currently has) and what
 * kind of value a leaf expects. Used to check `--set` paths and to word validation errors.
 * @module
 */
import { z } from "zod";

/** A schema position: the schema expected at a JSON path and the value found there. */
export interface SchemaPosition {
  /** The schema with `default`, `prefault` and `optional` wrappers removed. */
  schema: z.ZodType;
  /**
   * The value at the path; when the input has none there, what the schema's default makes of
   * `undefined` (so a missing `dataset` section is treated as the default avatars one).
   */
  value: unknown;
}

/** Why a path cannot be followed: an unknown key, or a step into something not an object. */
export interface SchemaWalkFailure {
  /** The number of path segments that were valid before the failing one. */
  depth: number;
  /** What went wrong, e.g. `unknown key 'foo'`. */
  message: string;
  /** The keys accepted where the walk failed, when it failed at an object. */
  validKeys?: string[];
  /** The discriminating `kind` of the object where the walk failed, when it has one. */
  kind?: string;
  /** Set when the walk stopped at a section whose `kind` is missing or unknown. */
  unknownKind?: boolean;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Removes `default`, `prefault` and `optional` wrappers, filling the value from a default. */
export function unwrapSchema(schema: z.ZodType, value: unknown): SchemaPosition {
  let current: z.ZodType = schema;
  let currentValue = value;
  while (
    current instanceof z.ZodDefault || current instanceof z.ZodPrefault ||
    current instanceof z.ZodOptional
  ) {
    if (currentValue === undefined && !(current instanceof z.ZodOptional)) {
      const parsed = current.safeParse(undefined);
      if (parsed.success) currentValue = parsed.data;
    }
    current = current.unwrap() as z.ZodType;
  }
  return { schema: current, value: currentValue };
}

/**
 * The object schema at a position: the schema itself, or for a discriminated union the option
 * whose `kind` matches the value's. Undefined for a non-object or an unknown kind.
 */
export function objectSchemaAt(position: SchemaPosition): z.ZodObject | undefined {
  const { schema, value } = position;
  if (schema instanceof z.ZodObject) return schema;
  if (schema instanceof z.ZodDiscriminatedUnion) {
    const kind = isRecord(value) ? value.kind : undefined;
    for (const option of schema.options) {
      if (!(option instanceof z.ZodObject)) continue;
      const literal = option.shape.kind;
      if (literal instanceof z.ZodLiteral && literal.values.has(kind as z.core.util.Literal)) {
        return option;
      }
    }
  }
  return undefined;
}

/** The keys accepted at a position, or undefined when it is not (a known kind of) object. */
export function keysAt(position: SchemaPosition): string[] | undefined {
  const object = objectSchemaAt(position);
  return object ? Object.keys(object.shape) : undefined;
}

/** The discriminating `kind` values of a discriminated union, in declaration order. */
export function kindsOf(schema: z.ZodType): string[] {
  if (!(schema instanceof z.ZodDiscriminatedUnion)) return [];
  const kinds: string[] = [];
  for (const option of schema.options) {
    if (!(option instanceof z.ZodObject)) continue;
    const literal = option.shape.kind;
    if (literal instanceof z.ZodLiteral) kinds.push(...[...literal.values].map(String));
  }
  return kinds;
}

/**
 * Follows `path` from `start` (the root schema and the input at the root). Returns the position
 * reached, or why the path cannot be followed. Array indices step into the element schema.
 */
export function walkSchema(
  start: SchemaPosition,
  path: readonly PropertyKey[],
): SchemaPosition | SchemaWalkFailure {
  let position = unwrapSchema(start.schema, start.value);
  for (const [depth, segment] of path.entries()) {
    const { schema, value: current } = position;
    if (schema instanceof z.ZodArray && typeof segment === "number") {
      const item = Array.isArray(current) ? current[segment] : undefined;
      position = unwrapSchema(schema.element as z.ZodType, item);
      continue;
    }
    const object = objectSchemaAt(position);
    if (object === undefined) {
      if (schema instanceof z.ZodDiscriminatedUnion) {
        return { depth, message: "the section has no known 'kind'", unknownKind: true };
      }
      return { depth, message: "not an object" };
    }
    const key = String(segment);
    const kind = isRecord(current) && typeof current.kind === "string" ? current.kind : undefined;
    const validKeys = Object.keys(object.shape);
    if (!Object.hasOwn(object.shape, key)) {
      return {
        depth,
        message: `unknown key '${key}'`,
        validKeys,
        kind: schema instanceof z.ZodDiscriminatedUnion ? kind : undefined,
      };
    }
    const child = isRecord(current) ? current[key] : undefined;
    position = unwrapSchema(object.shape[key] as z.ZodType, child);
  }
  return position;
}

/** Whether a walk result is a failure. */
export function isWalkFailure(
  result: SchemaPosition | SchemaWalkFailure,
): result is SchemaWalkFailure {
  return "message" in result;
}

/** Whether the schema is an integer number schema (`z.number().int()`). */
export function isIntegerSchema(schema: z.ZodType): boolean {
  return schema instanceof z.ZodNumber && schema.format === "safeint";
}
