/**
 * Manga-like faces rendered from DiceBear's CC0 "lorelei" style (artist Lisa Wischofsky),
 * deterministically from the experiment seed, with exact per-image attribute labels and an
 * on-disk cache.
 *
 * Avatar `i` of experiment seed `s` is DiceBear's avatar for the seed string `ddpm-lab/<s>/<i>`
 * with a background colour from {@link AVATAR_BACKGROUNDS}. DiceBear draws every choice from a
 * key-based PRNG over that string, so the face is the same on every machine; the chosen variants
 * and colours are read back from DiceBear's resolved options (`Avatar.toJSON()`), which are the
 * very values the renderer used, so the labels are exact. librsvg (through sharp) rasterises the
 * SVG at `renderSize` pixels.
 *
 * Lorelei is black line art on white skin: by default only the background colour varies, so that
 * is the only colour attribute in the labels. `attributes` (the dataset section's) changes which
 * attributes vary and how: a component's variants, its probability, groups of variants as one
 * label (mouth happy/sad), a colour palette (hairColor, backgroundColor, ...), and exactly balanced
 * values. Without `attributes` the faces are those of earlier versions, byte for byte.
 *
 * Cache: `<cacheDir>/lorelei-s<seed>-n<count>-r<renderSize>-<key>.rgb` holds the pixels (N x H x W
 * x 3 uint8, NHWC) and the `.json` beside it the labels, vocabulary and cache key. The key hashes
 * the format version, the DiceBear style and core versions, a probe SVG, the sharp/libvips/librsvg
 * versions, the seed, the count and the render size. Both files are written atomically (temp file
 * and rename), the JSON last, so a present JSON means a complete set.
 * @module
 */
import { Avatar, Style } from "@dicebear/core";
import lorelei from "@dicebear/styles/lorelei.json" with { type: "json" };
import sharp from "sharp";
import { createHash } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import { writeFileAtomic } from "../io/files.ts";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { DatasetConfig } from "../../schemas/experiment.ts";
import { UserError } from "../errors.ts";
import { deriveRng } from "../rng.ts";
import type { Attribute, LabelSet } from "./labels.ts";
import type { RgbImages } from "./images.ts";

/** Version of the avatar cache format and rendering recipe; bump it to invalidate old caches. */
export const AVATAR_FORMAT_VERSION = 1;

/** The pastel background palette; each avatar gets one, picked by DiceBear from its seed. */
export const AVATAR_BACKGROUNDS: readonly string[] = [
  "#b6e3f4", // light blue
  "#c0aede", // lavender
  "#d1d4f9", // periwinkle
  "#ffd5dc", // pink
  "#ffdfbf", // peach
  "#fff1b5", // butter
  "#c9f0d3", // mint
  "#e8d5c4", // sand
];

/** The label attribute name of the background colour. */
export const BACKGROUND_ATTRIBUTE = "backgroundColor";

/** The `attributes` of an avatars dataset section: how each attribute varies. */
export type AvatarAttributes = NonNullable<
  Extract<DatasetConfig, { kind: "avatars" }>["attributes"]
>;

/** A rendered set of avatars (`size`: the render size). */
export interface AvatarSet extends RgbImages {
  /** The chosen variant (or group) of each component and the colours of every face. */
  labels: LabelSet;
  /** Whether the set was read from the cache rather than rendered. */
  fromCache: boolean;
  /** The cache's pixel file. */
  cacheFile: string;
}

/** Options of {@link loadAvatars}. */
export interface LoadAvatarsOptions {
  /** Number of faces to render. */
  count: number;
  /** Pixel size the faces are rasterised at. */
  renderSize: number;
  /** Cache directory; default `<project>/.cache/avatars/`. */
  cacheDir?: string;
  /** Called as faces are rendered (and once with `total, total` on a cache hit). */
  onProgress?: (done: number, total: number) => void;
  /** Faces rasterised at once; default `min(32, 4 x CPU cores)`. */
  concurrency?: number;
  /** How attributes vary (the dataset section's `attributes`); absent: the default faces. */
  attributes?: AvatarAttributes;
  /** The experiment file, named in errors about `attributes`. */
  configFile?: string;
}

type StyleDefinition = ConstructorParameters<typeof Style>[0];

let cachedStyle: Style | undefined;

function loreleiStyle(): Style {
  cachedStyle ??= new Style(lorelei as StyleDefinition);
  return cachedStyle;
}

interface ComponentDefinition {
  probability?: number;
  variants: Record<string, unknown>;
}

/** Components in label order; those that can be absent get `none` as value 0. */
const COMPONENTS = [
  "head",
  "hair",
  "eyes",
  "eyebrows",
  "nose",
  "mouth",
  "glasses",
  "earrings",
  "beard",
  "freckles",
  "hairAccessories",
] as const;

/** The DiceBear seed string of avatar `index` of experiment seed `seed`. */
export function avatarSeed(seed: number, index: number): string {
  return `ddpm-lab/${seed}/${index}`;
}

/** What one attribute of the plan draws: a component's variants or a colour's palette. */
interface PlannedAttribute {
  /** Label name: the component (`hair`) or the colour option (`hairColor`). */
  name: string;
  kind: "component" | "color";
  /** The label vocabulary: `none` first when optional, then variants, groups or colours. */
  values: string[];
  /** Components: the variants allowed (undefined: DiceBear's default, all of them). */
  variants?: string[];
  /** Components: the probability passed to DiceBear (undefined: the style's). */
  probability?: number;
  /** Components with groups: the group index of each allowed variant. */
  groupOf?: Map<string, number>;
  /** Colours: the palette (lower case). */
  palette?: string[];
  /** Per face, the forced label value (balanced), else undefined. */
  forced?: Int32Array;
}

/** How faces are drawn and labelled: the resolved `attributes` of an avatars section. */
export interface AvatarPlan {
  /** Label attributes, in order: the components, then the colours (backgroundColor last). */
  attributes: Attribute[];
  /** The DiceBear options of face `index` (besides seed and size). */
  options(index: number): Record<string, unknown>;
  /** The label row of a face from DiceBear's resolved options. */
  labels(resolved: Record<string, unknown>, index: number): number[];
}

function componentDefinitions(): Record<string, ComponentDefinition> {
  return (lorelei as unknown as { components: Record<string, ComponentDefinition> }).components;
}

/** The colour options of lorelei: `<slot>Color` for each colour slot, and `backgroundColor`. */
export function avatarColorNames(): string[] {
  const colors = Object.keys((lorelei as unknown as { colors: Record<string, unknown> }).colors);
  return [...colors.map((c) => `${c}Color`), BACKGROUND_ATTRIBUTE];
}

function matches(pattern: string, variant: string): boolean {
  return pattern.endsWith("*") ? variant.startsWith(pattern.slice(0, -1)) : pattern === variant;
}

/**
 * Resolves the `attributes` of an avatars section for `count` faces of experiment seed `seed`
 * (see the module documentation). Throws a {@link UserError} naming the field for an unknown
 * attribute, variant or colour, an option that does not apply, or groups that do not cover every
 * variant exactly once.
 */
export function avatarPlan(
  attributes: AvatarAttributes | undefined,
  options: { seed: number; count: number; configFile?: string },
): AvatarPlan {
  const config = attributes ?? {};
  const components = componentDefinitions();
  const colorNames = avatarColorNames();
  const fail = (path: string, message: string, expected: string): never => {
    throw new UserError(message, {
      file: options.configFile,
      path: `dataset.attributes${path}`,
      expected,
    });
  };
  for (const name of Object.keys(config)) {
    if (!(name in components) && !colorNames.includes(name)) {
      fail(
        `.${name}`,
        `unknown avatar attribute '${name}'`,
        `one of ${[...COMPONENTS, ...colorNames].join(", ")}`,
      );
    }
  }
  const planned: PlannedAttribute[] = [];
  for (const name of COMPONENTS) {
    const component = components[name];
    const all = Object.keys(component.variants).sort();
    const c = config[name] ?? {};
    c.values?.forEach((v, k) => {
      if (!all.includes(v)) {
        fail(`.${name}.values[${k}]`, `unknown ${name} variant '${v}'`, all.join(", "));
      }
    });
    const variants = c.values ? [...new Set(c.values)] : undefined;
    const allowed = variants ?? all;
    const probability = c.probability ?? component.probability ?? 100;
    const optional = probability < 100;
    let groupOf: Map<string, number> | undefined;
    let labels = allowed.slice().sort();
    if (c.groups) {
      const names = Object.keys(c.groups);
      groupOf = new Map();
      for (const variant of allowed) {
        const hits = names.filter((g) => c.groups![g].some((p) => matches(p, variant)));
        if (hits.length !== 1) {
          fail(
            `.${name}.groups`,
            `${name} variant '${variant}' is in ${
              hits.length === 0 ? "no group" : `groups ${hits.join(", ")}`
            }`,
            "every allowed variant in exactly one group ('happy*' matches a prefix)",
          );
        }
        groupOf.set(variant, names.indexOf(hits[0]));
      }
      names.forEach((g) => {
        if (![...groupOf!.values()].includes(names.indexOf(g))) {
          fail(
            `.${name}.groups.${g}`,
            `group '${g}' matches no allowed ${name} variant`,
            allowed.join(", "),
          );
        }
      });
      labels = names;
    }
    planned.push({
      name,
      kind: "component",
      values: optional ? ["none", ...labels] : labels,
      ...(variants ? { variants } : {}),
      ...(c.probability !== undefined ? { probability: c.probability } : {}),
      ...(groupOf ? { groupOf } : {}),
    });
  }
  for (const name of colorNames) {
    const c = config[name];
    const isBackground = name === BACKGROUND_ATTRIBUTE;
    if (!c && !isBackground) continue;
    if (c?.groups || c?.probability !== undefined) {
      fail(
        `.${name}`,
        `${name} is a colour: it takes values and balanced only`,
        "values, balanced",
      );
    }
    c?.values?.forEach((v, k) => {
      if (!/^#[0-9a-fA-F]{6}$/.test(v)) {
        fail(`.${name}.values[${k}]`, `'${v}' is not a colour`, "'#rrggbb'");
      }
    });
    const palette = c?.values
      ? [...new Set(c.values.map((v) => v.toLowerCase()))]
      : isBackground
      ? [...AVATAR_BACKGROUNDS]
      : [(lorelei as unknown as { colors: Record<string, { values: string[] }> }).colors[
        name.slice(0, -"Color".length)
      ].values[0].toLowerCase()];
    planned.push({ name, kind: "color", values: palette, palette });
  }
  for (const attribute of planned) {
    if (!config[attribute.name]?.balanced) continue;
    const n = attribute.values.length;
    const order = deriveRng(options.seed, `avatars/balance/${attribute.name}`).permutation(
      options.count,
    );
    const forced = new Int32Array(options.count);
    order.forEach((face, k) => forced[face] = k % n);
    attribute.forced = forced;
  }
  return {
    attributes: planned.map((a) => ({ name: a.name, count: a.values.length, values: a.values })),
    options: (index) => faceOptions(planned, index),
    labels: (resolved, index) => planned.map((a) => labelOf(a, resolved, index)),
  };
}

function faceOptions(planned: PlannedAttribute[], index: number): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const a of planned) {
    if (a.kind === "color") {
      const forced = a.forced?.[index];
      out[a.name] = forced === undefined ? a.palette : [a.palette![forced]];
      continue;
    }
    if (a.variants) out[`${a.name}Variant`] = a.variants;
    if (a.probability !== undefined) out[`${a.name}Probability`] = a.probability;
    const forced = a.forced?.[index];
    if (forced === undefined) continue;
    const value = a.values[forced];
    if (a.values[0] === "none" && forced === 0) {
      out[`${a.name}Probability`] = 0;
      continue;
    }
    out[`${a.name}Probability`] = 100;
    if (a.groupOf) {
      const group = a.values.indexOf(value) - (a.values[0] === "none" ? 1 : 0);
      out[`${a.name}Variant`] = [...a.groupOf].filter(([, g]) => g === group).map(([v]) => v);
    } else {
      out[`${a.name}Variant`] = [value];
    }
  }
  return out;
}

function labelOf(a: PlannedAttribute, resolved: Record<string, unknown>, index: number): number {
  let chosen: string;
  if (a.kind === "color") {
    const colors = resolved[a.name];
    chosen = Array.isArray(colors) ? String(colors[0]).toLowerCase() : "";
  } else {
    const variant = resolved[`${a.name}Variant`];
    if (variant === undefined) chosen = "none";
    else if (a.groupOf) {
      const g = a.groupOf.get(String(variant));
      chosen = g === undefined ? String(variant) : a.values[g + (a.values[0] === "none" ? 1 : 0)];
    } else chosen = String(variant);
  }
  const value = a.values.indexOf(chosen);
  if (value < 0) {
    throw new Error(`avatar ${index}: unexpected ${a.name} value '${chosen}' from DiceBear`);
  }
  return value;
}

/**
 * The label attributes of the default avatar set: one per lorelei component (its variants,
 * preceded by `none` when the component is optional) and the background colour (the palette).
 */
export function avatarLabelAttributes(): Attribute[] {
  return avatarPlan(undefined, { seed: 0, count: 1 }).attributes;
}

/** The SVG and the label values of one avatar. */
export interface AvatarSvg {
  /** The SVG markup, `size` pixels wide and high. */
  svg: string;
  /** One value per attribute of the plan ({@link avatarLabelAttributes} by default). */
  labels: number[];
}

/**
 * Builds the SVG of avatar `index` of experiment seed `seed` at `options.size` pixels, drawn as
 * `options.plan` says (default: the default faces).
 */
export function avatarSvg(
  seed: number,
  index: number,
  options: { size: number; plan?: AvatarPlan },
): AvatarSvg {
  const plan = options.plan ?? avatarPlan(undefined, { seed, count: index + 1 });
  const avatar = new Avatar(loreleiStyle(), {
    seed: avatarSeed(seed, index),
    size: options.size,
    ...plan.options(index),
  });
  const resolved = avatar.toJSON().options as Record<string, unknown>;
  return { svg: avatar.toString(), labels: plan.labels(resolved, index) };
}

function defaultCacheDir(): string {
  const here = new URL(".", import.meta.url);
  if (here.protocol === "file:") return join(fileURLToPath(here), "..", "..", ".cache", "avatars");
  return resolve(".cache", "avatars");
}

function dicebearCoreVersion(): string {
  try {
    const url = import.meta.resolve("@dicebear/core");
    return /@dicebear[+/]core@([^/]+)\//.exec(url)?.[1] ?? url;
  } catch {
    return "bundled"; // a `deno bundle` build (bench/gpu/pack.sh) has no import map
  }
}

function cacheKey(
  seed: number,
  options: { count: number; renderSize: number; attributes?: AvatarAttributes; plan: AvatarPlan },
): string {
  const { count, renderSize } = options;
  const probe = avatarSvg(seed, 0, { size: renderSize, plan: options.plan }).svg;
  const parts = {
    format: AVATAR_FORMAT_VERSION,
    style: (lorelei as unknown as { $id?: string }).$id ?? "",
    core: dicebearCoreVersion(),
    probe: createHash("sha256").update(probe).digest("hex"),
    backgrounds: AVATAR_BACKGROUNDS,
    sharp: [sharp.versions.sharp, sharp.versions.vips, sharp.versions.rsvg],
    seed,
    count,
    renderSize,
    // Only when given, so the default faces keep the cache key of earlier versions.
    ...(options.attributes ? { attributes: options.attributes } : {}),
  };
  return createHash("sha256").update(JSON.stringify(parts)).digest("hex").slice(0, 16);
}

/** The cache's label vocabulary (format 1): name and value names. */
interface CachedAttribute {
  name: string;
  values: string[];
}

interface CacheMeta {
  version: number;
  key: string;
  seed: number;
  count: number;
  renderSize: number;
  bytes: number;
  attributes: CachedAttribute[];
  /** `count x attributes` values, row-major. */
  labels: number[];
}

function columns(rows: ArrayLike<number>, count: number, attributes: number): Int32Array[] {
  return Array.from({ length: attributes }, (_, a) => {
    const column = new Int32Array(count);
    for (let i = 0; i < count; i++) column[i] = rows[i * attributes + a];
    return column;
  });
}

async function readCache(
  metaFile: string,
  pixelFile: string,
  key: string,
  bytes: number,
): Promise<{ pixels: Uint8Array; labels: LabelSet } | undefined> {
  let meta: CacheMeta;
  try {
    meta = JSON.parse(await readFile(metaFile, "utf8"));
  } catch {
    return undefined;
  }
  if (meta.version !== AVATAR_FORMAT_VERSION || meta.key !== key || meta.bytes !== bytes) {
    return undefined;
  }
  let pixels: Uint8Array;
  try {
    const buffer = await readFile(pixelFile);
    pixels = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  } catch {
    return undefined;
  }
  if (pixels.length !== bytes || meta.labels.length !== meta.count * meta.attributes.length) {
    return undefined;
  }
  return {
    pixels,
    labels: {
      attributes: meta.attributes.map((a) => ({
        name: a.name,
        count: a.values.length,
        values: a.values,
      })),
      labels: columns(meta.labels, meta.count, meta.attributes.length),
    },
  };
}

async function renderAll(
  seed: number,
  options: {
    count: number;
    renderSize: number;
    plan: AvatarPlan;
    concurrency: number;
    onProgress?: (done: number, total: number) => void;
  },
): Promise<{ pixels: Uint8Array; rows: Uint8Array | Int32Array }> {
  const { count, renderSize, plan } = options;
  const attributes = plan.attributes.length;
  const imageBytes = renderSize * renderSize * 3;
  const pixels = new Uint8Array(count * imageBytes);
  const rows = new Int32Array(count * attributes);
  const encoder = new TextEncoder();
  let next = 0;
  let done = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      const { svg, labels } = avatarSvg(seed, i, { size: renderSize, plan });
      rows.set(labels, i * attributes);
      const { data: raw, info } = await sharp(encoder.encode(svg))
        .flatten({ background: "#ffffff" })
        .removeAlpha()
        .raw({ depth: "uchar" })
        .toBuffer({ resolveWithObject: true });
      if (info.width !== renderSize || info.height !== renderSize || info.channels !== 3) {
        throw new Error(
          `avatar ${i}: rasterised to ${info.width}x${info.height}x${info.channels}, ` +
            `expected ${renderSize}x${renderSize}x3`,
        );
      }
      pixels.set(raw, i * imageBytes);
      done++;
      options.onProgress?.(done, count);
    }
  };
  const workers = Math.max(1, Math.min(options.concurrency, count));
  await Promise.all(Array.from({ length: workers }, worker));
  return { pixels, rows };
}

/**
 * Loads `options.count` lorelei faces of experiment seed `seed` at `options.renderSize` pixels:
 * from the cache when it holds them, otherwise renders them (and stores them in the cache).
 * Rendering and cache loading give identical bytes.
 */
export async function loadAvatars(seed: number, options: LoadAvatarsOptions): Promise<AvatarSet> {
  const { count, renderSize } = options;
  if (!Number.isInteger(count) || count < 1) {
    throw new RangeError(`loadAvatars: count must be an integer >= 1, got ${count}`);
  }
  if (!Number.isInteger(renderSize) || renderSize < 1) {
    throw new RangeError(`loadAvatars: renderSize must be an integer >= 1, got ${renderSize}`);
  }
  const plan = avatarPlan(options.attributes, { seed, count, configFile: options.configFile });
  const cacheDir = resolve(options.cacheDir ?? defaultCacheDir());
  const key = cacheKey(seed, { count, renderSize, attributes: options.attributes, plan });
  const base = join(cacheDir, `lorelei-s${seed}-n${count}-r${renderSize}-${key}`);
  const pixelFile = `${base}.rgb`;
  const metaFile = `${base}.json`;
  const bytes = count * renderSize * renderSize * 3;

  const cached = await readCache(metaFile, pixelFile, key, bytes);
  if (cached) {
    options.onProgress?.(count, count);
    return { count, size: renderSize, ...cached, fromCache: true, cacheFile: pixelFile };
  }

  const concurrency = options.concurrency ??
    Math.min(32, 4 * Math.max(1, navigator.hardwareConcurrency ?? 1));
  const rendered = await renderAll(seed, {
    count,
    renderSize,
    plan,
    concurrency,
    onProgress: options.onProgress,
  });
  const meta: CacheMeta = {
    version: AVATAR_FORMAT_VERSION,
    key,
    seed,
    count,
    renderSize,
    bytes,
    attributes: plan.attributes.map((a) => ({ name: a.name, values: a.values! })),
    labels: Array.from(rendered.rows),
  };
  await mkdir(cacheDir, { recursive: true });
  await writeFileAtomic(pixelFile, rendered.pixels);
  await writeFileAtomic(metaFile, JSON.stringify(meta));
  return {
    count,
    size: renderSize,
    pixels: rendered.pixels,
    labels: {
      attributes: plan.attributes,
      labels: columns(rendered.rows, count, plan.attributes.length),
    },
    fromCache: false,
    cacheFile: pixelFile,
  };
}
