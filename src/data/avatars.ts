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
 * Lorelei is black line art on white skin: of its colours only the background varies, so that is
 * the only colour attribute in the labels.
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

/** One categorical attribute of a labelled dataset: its name and its vocabulary. */
export interface LabelAttribute {
  /** Attribute name, e.g. `hair` or `backgroundColor`. */
  name: string;
  /** Vocabulary: value `v` of this attribute means `values[v]` (e.g. `none`, `variant01`). */
  values: string[];
}

/** Per-image categorical labels as small integers plus their vocabulary. */
export interface Labels {
  /** The attributes, one per column of `data`. */
  attributes: LabelAttribute[];
  /** `count x attributes.length` values, row-major: image `i`, attribute `a` at `i * A + a`. */
  data: Uint8Array;
}

/** A rendered set of avatars. */
export interface AvatarSet {
  /** Number of faces. */
  count: number;
  /** Width and height in pixels (the render size). */
  size: number;
  /** `count x size x size x 3` RGB bytes, NHWC. */
  pixels: Uint8Array;
  /** The chosen variant of each component and the background colour of every face. */
  labels: Labels;
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

/**
 * The label attributes of the avatar set: one per lorelei component (its variants, preceded by
 * `none` when the component is optional) and the background colour (the palette).
 */
export function avatarLabelAttributes(): LabelAttribute[] {
  const components = (lorelei as unknown as { components: Record<string, ComponentDefinition> })
    .components;
  const attributes: LabelAttribute[] = [];
  for (const name of COMPONENTS) {
    const component = components[name];
    const variants = Object.keys(component.variants).sort();
    const optional = component.probability !== undefined && component.probability < 100;
    attributes.push({ name, values: optional ? ["none", ...variants] : variants });
  }
  attributes.push({ name: BACKGROUND_ATTRIBUTE, values: [...AVATAR_BACKGROUNDS] });
  return attributes;
}

/** The SVG and the label values of one avatar. */
export interface AvatarSvg {
  /** The SVG markup, `size` pixels wide and high. */
  svg: string;
  /** One value per attribute of {@link avatarLabelAttributes}. */
  labels: number[];
}

/** Builds the SVG of avatar `index` of experiment seed `seed` at `options.size` pixels. */
export function avatarSvg(seed: number, index: number, options: { size: number }): AvatarSvg {
  return buildAvatar(seed, index, options.size, avatarLabelAttributes());
}

function buildAvatar(
  seed: number,
  index: number,
  size: number,
  attributes: LabelAttribute[],
): AvatarSvg {
  const avatar = new Avatar(loreleiStyle(), {
    seed: avatarSeed(seed, index),
    size,
    backgroundColor: AVATAR_BACKGROUNDS,
  });
  const resolved = avatar.toJSON().options as Record<string, unknown>;
  const labels = attributes.map((attribute) => {
    let chosen: string;
    if (attribute.name === BACKGROUND_ATTRIBUTE) {
      const colors = resolved.backgroundColor;
      chosen = Array.isArray(colors) ? String(colors[0]).toLowerCase() : "";
    } else {
      const variant = resolved[`${attribute.name}Variant`];
      chosen = variant === undefined ? "none" : String(variant);
    }
    const value = attribute.values.indexOf(chosen);
    if (value < 0) {
      throw new Error(
        `avatar ${index}: unexpected ${attribute.name} value '${chosen}' from DiceBear`,
      );
    }
    return value;
  });
  return { svg: avatar.toString(), labels };
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

function cacheKey(seed: number, count: number, renderSize: number): string {
  const probe = avatarSvg(seed, 0, { size: renderSize }).svg;
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
  };
  return createHash("sha256").update(JSON.stringify(parts)).digest("hex").slice(0, 16);
}

interface CacheMeta {
  version: number;
  key: string;
  seed: number;
  count: number;
  renderSize: number;
  bytes: number;
  attributes: LabelAttribute[];
  labels: number[];
}

async function readCache(
  metaFile: string,
  pixelFile: string,
  key: string,
  bytes: number,
): Promise<{ pixels: Uint8Array; labels: Labels } | undefined> {
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
  return { pixels, labels: { attributes: meta.attributes, data: Uint8Array.from(meta.labels) } };
}

async function renderAll(
  seed: number,
  count: number,
  renderSize: number,
  options: { concurrency: number; onProgress?: (done: number, total: number) => void },
): Promise<{ pixels: Uint8Array; labels: Labels }> {
  const attributes = avatarLabelAttributes();
  const imageBytes = renderSize * renderSize * 3;
  const pixels = new Uint8Array(count * imageBytes);
  const data = new Uint8Array(count * attributes.length);
  const encoder = new TextEncoder();
  let next = 0;
  let done = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      const { svg, labels } = buildAvatar(seed, i, renderSize, attributes);
      data.set(labels, i * attributes.length);
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
  return { pixels, labels: { attributes, data } };
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
  const cacheDir = resolve(options.cacheDir ?? defaultCacheDir());
  const key = cacheKey(seed, count, renderSize);
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
  const rendered = await renderAll(seed, count, renderSize, {
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
    attributes: rendered.labels.attributes,
    labels: Array.from(rendered.labels.data),
  };
  await mkdir(cacheDir, { recursive: true });
  await writeFileAtomic(pixelFile, rendered.pixels);
  await writeFileAtomic(metaFile, JSON.stringify(meta));
  return { count, size: renderSize, ...rendered, fromCache: false, cacheFile: pixelFile };
}
