/**
 * Categorical labels of a dataset: one Int32 index per image per attribute, with each
 * attribute's name, number of values and value names where the source knows them (avatar
 * variants, folder classes; Cartoon Set CSVs give only the number of values).
 *
 * A conditional model embeds `labels[a][i]` in `[0, attributes[a].count)`; the attribute judge
 * trains one classifier per attribute with `count` outputs.
 * @module
 */

/** One categorical attribute: its name, how many values it takes and, when known, their names. */
export interface Attribute {
  /** Attribute name, e.g. `hair`, `class`, `backgroundColor`. */
  name: string;
  /** Number of values: labels lie in `[0, count)`. */
  count: number;
  /** `values[v]` names value `v` (e.g. `none`, `variant01`, `#b6e3f4`); absent when unknown. */
  values?: string[];
}

/** Per-image labels: `labels[a][i]` is the value of attribute `attributes[a]` for image `i`. */
export interface LabelSet {
  /** The attributes, in a fixed order (the order a conditional model sees them). */
  attributes: Attribute[];
  /** One array per attribute, each with one index per image. */
  labels: Int32Array[];
}

/** The labels of images `indices` (a batch), one Int32Array per attribute in attribute order. */
export function batchLabels(set: LabelSet, indices: ArrayLike<number>): Int32Array[] {
  return set.labels.map((column) => Int32Array.from(indices, (i) => column[i]));
}

/** The label set restricted to the images `keep`, in that order. */
export function selectLabels(set: LabelSet, keep: ArrayLike<number>): LabelSet {
  return { attributes: set.attributes, labels: batchLabels(set, keep) };
}

/**
 * How often each value occurs, per attribute: `{hair: {variant01: 250, ...}}`, keyed by the value
 * name, or by the index when names are unknown; values that never occur are listed with 0.
 */
export function valueCounts(set: LabelSet): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  set.attributes.forEach((attribute, a) => {
    const counts = new Array<number>(attribute.count).fill(0);
    for (const v of set.labels[a]) counts[v]++;
    const named: Record<string, number> = {};
    counts.forEach((n, v) => named[attribute.values?.[v] ?? String(v)] = n);
    out[attribute.name] = named;
  });
  return out;
}

/**
 * The ImageFolder class of each path (`/`-separated, relative to the dataset root): its first
 * component, when every path has one; undefined when some image sits at the root.
 */
export function folderClassLabels(paths: readonly string[]): LabelSet | undefined {
  const classOf = paths.map((path) => {
    const slash = path.indexOf("/");
    return slash < 0 ? undefined : path.slice(0, slash);
  });
  if (classOf.length === 0 || classOf.some((c) => c === undefined)) return undefined;
  const classes = [...new Set(classOf as string[])].sort((a, b) => a < b ? -1 : a > b ? 1 : 0);
  const index = new Map(classes.map((c, i) => [c, i]));
  return {
    attributes: [{ name: "class", count: classes.length, values: classes }],
    labels: [Int32Array.from(classOf, (c) => index.get(c as string)!)],
  };
}
