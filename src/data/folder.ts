/**
 * ImageFolder-style datasets: every png/jpg/jpeg/webp/gif under a directory (searched
 * recursively, extensions case-insensitive, symbolic links followed once), in sorted path order.
 * Decoding is {@link decodeImages}'s.
 *
 * If every image lies in a subdirectory, the first path component is the image's class (the
 * ImageFolder convention) and is returned as a `class` label attribute with sorted class names.
 * @module
 */
import { join, resolve } from "node:path";
import { UserError } from "../errors.ts";
import type { ImageEntry } from "./decode.ts";
import { folderClassLabels } from "./labels.ts";
import { hashFileListing, type ImageSource } from "./source.ts";

/** The image file extensions the loaders read (compared case-insensitively). */
export const IMAGE_EXTENSIONS: readonly string[] = [".png", ".jpg", ".jpeg", ".webp", ".gif"];

/** Whether `name` ends with one of {@link IMAGE_EXTENSIONS} (any case) after a non-empty stem. */
export function isImageName(name: string): boolean {
  const lower = name.toLowerCase();
  return IMAGE_EXTENSIONS.some((ext) => lower.endsWith(ext) && lower.length > ext.length);
}

/** Sorts strings by UTF-16 code unit, as the loaders order paths. */
export function compareCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The image files under `root` (recursively, following symbolic links once), as `/`-separated
 * paths relative to `root`, sorted by code unit. Throws a {@link UserError} when `root` does not
 * exist or is not a directory.
 */
export async function listImages(
  root: string,
  options: { configFile?: string; configPath?: string } = {},
): Promise<string[]> {
  return await listFiles(root, { ...options, match: isImageName });
}

/**
 * The files under `root` whose name satisfies `options.match` (see {@link listImages}).
 */
export async function listFiles(
  root: string,
  options: { match: (name: string) => boolean; configFile?: string; configPath?: string },
): Promise<string[]> {
  const where = { file: options.configFile, path: options.configPath ?? "dataset.path" };
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(root);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new UserError(`folder ${root} does not exist`, {
        ...where,
        expected: "an existing directory",
      });
    }
    throw error;
  }
  if (!info.isDirectory) {
    throw new UserError(`${root} is not a directory`, {
      ...where,
      expected: "a directory of images",
    });
  }
  const found: string[] = [];
  const visited = new Set<string>([await Deno.realPath(root)]);
  const walk = async (dir: string, prefix: string): Promise<void> => {
    for await (const entry of Deno.readDir(dir)) {
      const path = join(dir, entry.name);
      const relative = prefix + entry.name;
      let isFile = entry.isFile;
      let isDirectory = entry.isDirectory;
      if (entry.isSymlink) {
        try {
          const target = await Deno.stat(path);
          isFile = target.isFile;
          isDirectory = target.isDirectory;
        } catch {
          continue; // a dangling link
        }
      }
      if (isDirectory) {
        const real = await Deno.realPath(path);
        if (visited.has(real)) continue;
        visited.add(real);
        await walk(path, relative + "/");
      } else if (isFile && options.match(entry.name)) {
        found.push(relative);
      }
    }
  };
  await walk(root, "");
  return found.sort(compareCodeUnits);
}

/** Where a dataset is configured: the experiment file and the JSON path, for errors. */
export interface ConfigLocation {
  /** The experiment file. */
  configFile?: string;
  /** The JSON path of the field; default `dataset.path`. */
  configPath?: string;
}

/**
 * Opens the image folder `path`: lists its images (sorted, the first `options.limit`), their
 * classes, and the files to read. Throws a {@link UserError} when the folder does not exist or
 * holds no images.
 */
export async function openFolder(
  path: string,
  options: ConfigLocation & { limit?: number } = {},
): Promise<ImageSource> {
  const root = resolve(path);
  let files = await listImages(root, options);
  if (files.length === 0) {
    throw new UserError(`image folder ${root} contains no images`, {
      file: options.configFile,
      path: options.configPath ?? "dataset.path",
      expected: `image files with extension ${IMAGE_EXTENSIONS.join(", ")} (any case)`,
    });
  }
  if (options.limit !== undefined) files = files.slice(0, options.limit);
  const entries: ImageEntry[] = files.map((file) => {
    const name = join(root, file);
    return { name, read: () => Deno.readFile(name) };
  });
  return {
    location: root,
    entries,
    labels: folderClassLabels(files),
    skipped: [],
    contentHash: () => hashFileListing(root, files),
    close: () => Promise.resolve(),
  };
}
