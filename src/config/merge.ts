/**
 * Layering of experiment objects: `extends` bases under their children, `--set` overrides on
 * top. Objects merge deeply (the child wins), arrays and scalars are replaced whole, and an
 * object whose `kind` changes is replaced rather than merged.
 * @module
 */

/** A JSON object. */
export type JsonObject = Record<string, unknown>;

/** Whether `value` is a JSON object (not null, not an array). */
export function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Merges `child` over `base`: objects deeply, anything else replaced by the child. When both
 * objects have a `kind` and they differ (dataset `avatars` -> `folder`), the child replaces the
 * base object whole, so keys of the old kind do not leak into the new one. Neither input is
 * modified; the result shares no objects with the inputs.
 */
export function mergeLayers(base: unknown, child: unknown): unknown {
  if (child === undefined) return cloneJson(base);
  if (!isJsonObject(base) || !isJsonObject(child)) return cloneJson(child);
  if (base.kind !== undefined && child.kind !== undefined && base.kind !== child.kind) {
    return cloneJson(child);
  }
  const merged: JsonObject = cloneJson(base) as JsonObject;
  for (const [key, value] of Object.entries(child)) {
    // defineProperty keeps a `__proto__` key an own (and so rejected) key.
    Object.defineProperty(merged, key, {
      value: mergeLayers(Object.hasOwn(base, key) ? base[key] : undefined, value),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return merged;
}

/** A deep copy of a JSON value. */
export function cloneJson<T>(value: T): T {
  return value === undefined ? value : structuredClone(value);
}

/** The value at a path of object keys, or undefined when some step is missing. */
export function getAtPath(value: unknown, path: readonly PropertyKey[]): unknown {
  let current = value;
  for (const segment of path) {
    if (Array.isArray(current) && typeof segment === "number") current = current[segment];
    else if (
      isJsonObject(current) && typeof segment === "string" && Object.hasOwn(current, segment)
    ) {
      current = current[segment];
    } else return undefined;
  }
  return current;
}

/** Whether `value` has something (not undefined) at `path`. */
export function hasPath(value: unknown, path: readonly PropertyKey[]): boolean {
  return getAtPath(value, path) !== undefined;
}

/** An object holding `leaf` at the dotted `path`: `["train", "epochs"]`, 3 -> `{train: {epochs: 3}}`. */
export function objectAtPath(path: readonly string[], leaf: unknown): JsonObject {
  let result: unknown = leaf;
  for (const segment of [...path].reverse()) {
    const wrapper: JsonObject = {};
    Object.defineProperty(wrapper, segment, {
      value: result,
      enumerable: true,
      writable: true,
      configurable: true,
    });
    result = wrapper;
  }
  return result as JsonObject;
}
