/**
 * Google's Cartoon Set (seed 004): `csN.png` (500x500 RGBA) with `csN.csv` beside it, anywhere
 * under the folder (the 100k release splits into `0/` ... `9/`). Each CSV line is
 * `"name", index, total` (0-based index; a space may follow each comma); every attribute becomes a
 * categorical label with `total` values, in the order of the first CSV.
 *
 * Problems are reported per file: an image without its CSV, a CSV without its image, a line that
 * is not `"name", index, total`, an index out of range, or attributes that differ from the first
 * CSV's.
 * @module
 */
import { resolve } from "node:path";
import { UserError } from "../errors.ts";
import type { ImageEntry, SkippedFile } from "./decode.ts";
import { compareCodeUnits, type ConfigLocation, isImageName, listFiles } from "./folder.ts";
import type { Attribute, LabelSet } from "./labels.ts";
import { hashFileListing, type ImageSource } from "./source.ts";

/** One parsed CSV line. */
export interface CartoonAttribute {
  /** Attribute name, e.g. `hair`. */
  name: string;
  /** The chosen value, in `[0, total)`. */
  index: number;
  /** Number of values. */
  total: number;
}

const LINE = /^"([^"]+)"\s*,\s*(-?\d+)\s*,\s*(-?\d+)$/;

/**
 * Parses a Cartoon Set CSV. Throws an Error naming the line when one is not `"name", index,
 * total`, when an index is outside `[0, total)`, or when a name repeats.
 */
export function parseCartoonCsv(text: string): CartoonAttribute[] {
  const out: CartoonAttribute[] = [];
  const seen = new Set<string>();
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === "") return;
    const m = LINE.exec(line);
    if (!m) {
      throw new Error(`line ${i + 1}: '${line.slice(0, 60)}' is not '"name", index, total'`);
    }
    const [name, index, total] = [m[1], Number(m[2]), Number(m[3])];
    if (total < 1) throw new Error(`line ${i + 1}: ${name} has total ${total} (expected >= 1)`);
    if (index < 0 || index >= total) {
      throw new Error(`line ${i + 1}: ${name} index ${index} is out of range [0, ${total})`);
    }
    if (seen.has(name)) throw new Error(`line ${i + 1}: ${name} appears twice`);
    seen.add(name);
    out.push({ name, index, total });
  });
  if (out.length === 0) throw new Error("no attribute lines");
  return out;
}

function stem(path: string): string {
  return path.slice(0, path.lastIndexOf("."));
}

/**
 * Opens the Cartoon Set folder `path` (see the module documentation): pairs images with CSVs,
 * parses the CSVs and returns the pairs as images with labels; every problem is in `skipped`.
 */
export async function openCartoonSet(
  path: string,
  options: ConfigLocation & { limit?: number } = {},
): Promise<ImageSource> {
  const root = resolve(path);
  const where = { file: options.configFile, path: options.configPath ?? "dataset.path" };
  const files = await listFiles(root, {
    ...options,
    match: (name) => isImageName(name) || name.toLowerCase().endsWith(".csv"),
  });
  let images = files.filter(isImageName);
  const csvByStem = new Map(
    files.filter((f) => f.toLowerCase().endsWith(".csv")).map((f) => [stem(f), f]),
  );
  if (images.length === 0 && csvByStem.size === 0) {
    throw new UserError(`Cartoon Set folder ${root} contains no images and no CSVs`, {
      ...where,
      expected: "csN.png files with csN.csv beside them",
    });
  }
  if (options.limit !== undefined) images = images.slice(0, options.limit);
  const skipped: SkippedFile[] = [];
  if (options.limit === undefined) {
    const imageStems = new Set(images.map(stem));
    for (const [s, csv] of csvByStem) {
      if (!imageStems.has(s)) {
        skipped.push({ file: `${root}/${csv}`, reason: "CSV without its image (no csN.png)" });
      }
    }
  }
  const texts = await Promise.all(images.map(async (image) => {
    const csv = csvByStem.get(stem(image));
    return csv === undefined ? undefined : await Deno.readTextFile(`${root}/${csv}`);
  }));
  let reference: { file: string; attributes: CartoonAttribute[] } | undefined;
  const rows: { image: string; csv: string; values: CartoonAttribute[] }[] = [];
  images.forEach((image, i) => {
    const csv = csvByStem.get(stem(image));
    if (csv === undefined) {
      skipped.push({
        file: `${root}/${image}`,
        reason: `image without its CSV (expected ${stem(image)}.csv)`,
      });
      return;
    }
    let values: CartoonAttribute[];
    try {
      values = parseCartoonCsv(texts[i]!);
    } catch (error) {
      skipped.push({ file: `${root}/${csv}`, reason: (error as Error).message });
      return;
    }
    if (!reference) reference = { file: csv, attributes: values };
    const mismatch = compareAttributes(reference.attributes, values);
    if (mismatch) {
      skipped.push({ file: `${root}/${csv}`, reason: `${mismatch} (as in ${reference.file})` });
      return;
    }
    rows.push({ image, csv, values });
  });
  skipped.sort((a, b) => compareCodeUnits(a.file, b.file));
  const attributes: Attribute[] = (reference?.attributes ?? []).map((a) => ({
    name: a.name,
    count: a.total,
  }));
  const index = new Map(attributes.map((a, k) => [a.name, k]));
  const labels: LabelSet = {
    attributes,
    labels: attributes.map(() => new Int32Array(rows.length)),
  };
  rows.forEach((row, i) => {
    for (const v of row.values) labels.labels[index.get(v.name)!][i] = v.index;
  });
  const entries: ImageEntry[] = rows.map((row) => {
    const name = `${root}/${row.image}`;
    return { name, read: () => Deno.readFile(name) };
  });
  const hashed = rows.flatMap((row) => [row.image, row.csv]).sort(compareCodeUnits);
  return {
    location: root,
    entries,
    labels,
    skipped,
    contentHash: () => hashFileListing(root, hashed),
    close: () => Promise.resolve(),
  };
}

/** Why `values` does not have the attributes and totals of `reference`, or undefined. */
function compareAttributes(
  reference: CartoonAttribute[],
  values: CartoonAttribute[],
): string | undefined {
  const totals = new Map(reference.map((a) => [a.name, a.total]));
  for (const v of values) {
    const total = totals.get(v.name);
    if (total === undefined) return `unknown attribute ${v.name}`;
    if (total !== v.total) return `${v.name} has ${v.total} values, expected ${total}`;
  }
  if (values.length !== reference.length) {
    const have = new Set(values.map((v) => v.name));
    const missing = reference.filter((a) => !have.has(a.name)).map((a) => a.name);
    return `missing attribute${missing.length === 1 ? "" : "s"} ${missing.join(", ")}`;
  }
  return undefined;
}
