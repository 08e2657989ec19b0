/**
 * The decoded-image cache: a dataset decoded once (cropped and resized, uint8 NHWC) is kept in
 * `<cacheDir>/<key>.u8` with its labels, skipped files and content hash in `<key>.json`, so a later
 * run with the same data and the same deterministic transform starts without decoding.
 *
 * The key ({@link decodedCacheKey}) hashes the cache format, the source kind and content hash, the
 * options that choose or decode images (root, limit, background, onBadImage), the crop, size and
 * kernel, and the sharp/libvips versions. Both files are written atomically, the JSON last, so a
 * present JSON means a complete entry; an entry whose sizes do not match is ignored and rewritten.
 * @module
 */
import { createHash } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import sharp from "sharp";
import { writeFileAtomic } from "../io/files.ts";
import type { SkippedFile } from "./decode.ts";
import type { Attribute, LabelSet } from "./labels.ts";
import type { RgbImages } from "./images.ts";
import type { DecodeTransform } from "./transform.ts";

/** Version of the cache format and decoding recipe; bump it to invalidate old entries. */
export const DECODED_CACHE_VERSION = 1;

/** A cached decoded dataset. */
export interface DecodedEntry extends RgbImages {
  /** Labels, if the source has any. */
  labels?: LabelSet;
  /** Files left out, with reasons. */
  skipped: SkippedFile[];
  /** The source's content hash. */
  contentHash: string;
}

interface Meta {
  version: number;
  key: string;
  count: number;
  size: number;
  bytes: number;
  contentHash: string;
  attributes?: Attribute[];
  labels?: number[][];
  skipped: SkippedFile[];
}

/** The cache key of a source's content decoded with `transform` and `options` (32 hex digits). */
export function decodedCacheKey(
  contentHash: string,
  options: { kind: string; transform: DecodeTransform; selection: Record<string, unknown> },
): string {
  const parts = {
    version: DECODED_CACHE_VERSION,
    kind: options.kind,
    contentHash,
    selection: options.selection,
    transform: options.transform,
    sharp: [sharp.versions.sharp, sharp.versions.vips],
  };
  return createHash("sha256").update(JSON.stringify(parts)).digest("hex").slice(0, 32);
}

function files(dir: string, key: string): { pixels: string; meta: string } {
  return { pixels: join(dir, `${key}.u8`), meta: join(dir, `${key}.json`) };
}

/** The entry stored under `key`, or undefined when there is none or it is damaged. */
export async function readDecodedCache(
  dir: string,
  key: string,
): Promise<DecodedEntry | undefined> {
  const paths = files(dir, key);
  let meta: Meta;
  let pixels: Uint8Array;
  try {
    meta = JSON.parse(await readFile(paths.meta, "utf8"));
    const buffer = await readFile(paths.pixels);
    pixels = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  } catch {
    return undefined;
  }
  if (
    meta.version !== DECODED_CACHE_VERSION || meta.key !== key ||
    meta.bytes !== meta.count * meta.size * meta.size * 3 || pixels.length !== meta.bytes ||
    (meta.labels?.some((column) => column.length !== meta.count) ?? false)
  ) {
    return undefined;
  }
  const labels = meta.attributes && meta.labels
    ? { attributes: meta.attributes, labels: meta.labels.map((c) => Int32Array.from(c)) }
    : undefined;
  return {
    count: meta.count,
    size: meta.size,
    pixels,
    ...(labels ? { labels } : {}),
    skipped: meta.skipped,
    contentHash: meta.contentHash,
  };
}

/** Stores `entry` under `entry.key` (atomically, the JSON last). Returns the pixel file's path. */
export async function writeDecodedCache(
  dir: string,
  entry: DecodedEntry & { key: string },
): Promise<string> {
  const { key } = entry;
  const paths = files(dir, key);
  const meta: Meta = {
    version: DECODED_CACHE_VERSION,
    key,
    count: entry.count,
    size: entry.size,
    bytes: entry.pixels.length,
    contentHash: entry.contentHash,
    ...(entry.labels
      ? {
        attributes: entry.labels.attributes,
        labels: entry.labels.labels.map((c) => Array.from(c)),
      }
      : {}),
    skipped: entry.skipped,
  };
  await mkdir(dir, { recursive: true });
  await writeFileAtomic(paths.pixels, entry.pixels);
  await writeFileAtomic(paths.meta, JSON.stringify(meta));
  return paths.pixels;
}
