/**
 * Zip archives of images (the course's `manga.zip`: `manga/train/<class>/*.png`), read in place
 * with yauzl: the central directory is listed, and each image is inflated into memory when it is
 * decoded; nothing is extracted to disk. Archives up to 1 GiB are read into memory first.
 *
 * The images are the entries under `root` (default: the whole archive) whose names end in an image
 * extension, sorted by path; `__MACOSX/` (macOS resource forks) is ignored. As with a folder, the
 * first path component below `root` is the `class` label when every image has one.
 * @module
 */
// @ts-types="@types/yauzl"
import yauzl from "yauzl";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { resolve } from "node:path";
import { UserError } from "../errors.ts";
import type { ImageEntry } from "./decode.ts";
import { compareCodeUnits, type ConfigLocation, IMAGE_EXTENSIONS, isImageName } from "./folder.ts";
import { folderClassLabels } from "./labels.ts";
import { hashFile, type ImageSource } from "./source.ts";

/**
 * Archives up to this size are read into memory once (one read, hashed from memory, entries
 * listed without a read per entry: listing 12,000 entries through file reads takes ~9 s here);
 * larger ones are read from the file as needed.
 */
const IN_MEMORY_BYTES = 1 << 30;

function openArchive(path: string, bytes?: Uint8Array): Promise<yauzl.ZipFile> {
  const options = { lazyEntries: false, autoClose: false };
  return new Promise((ok, fail) => {
    const done = (error: Error | null, zip?: yauzl.ZipFile) => {
      if (error || !zip) fail(error ?? new Error("no archive"));
      else ok(zip);
    };
    if (bytes) {
      yauzl.fromBuffer(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length), options, done);
    } else yauzl.open(path, options, done);
  });
}

function listEntries(zip: yauzl.ZipFile): Promise<yauzl.Entry[]> {
  return new Promise((ok, fail) => {
    const entries: yauzl.Entry[] = [];
    zip.on("entry", (entry: yauzl.Entry) => entries.push(entry));
    zip.on("end", () => ok(entries));
    zip.on("error", fail);
  });
}

function readEntry(zip: yauzl.ZipFile, entry: yauzl.Entry): Promise<Uint8Array> {
  return new Promise((ok, fail) =>
    zip.openReadStream(entry, (error, stream) => {
      if (error || !stream) {
        fail(error ?? new Error("cannot open the entry"));
        return;
      }
      const chunks: Uint8Array[] = [];
      let length = 0;
      stream.on("data", (chunk: Uint8Array) => {
        chunks.push(chunk);
        length += chunk.length;
      });
      stream.on("error", fail);
      stream.on("end", () => {
        const bytes = new Uint8Array(length);
        let offset = 0;
        for (const chunk of chunks) {
          bytes.set(chunk, offset);
          offset += chunk.length;
        }
        ok(bytes);
      });
    })
  );
}

function firstLine(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split("\n")[0];
}

/**
 * Opens the zip archive `path` and lists its images under `options.root` (see the module
 * documentation). Throws a {@link UserError} when the file is missing or not a zip archive, or
 * when it holds no images under `root`. Close the returned source when done.
 */
export async function openZip(
  path: string,
  options: ConfigLocation & { root?: string; limit?: number } = {},
): Promise<ImageSource> {
  const archive = resolve(path);
  const where = { file: options.configFile, path: options.configPath ?? "dataset.path" };
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(archive);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new UserError(`zip archive ${archive} does not exist`, {
        ...where,
        expected: "an existing .zip file",
      });
    }
    throw error;
  }
  if (!info.isFile) {
    throw new UserError(`${archive} is not a file`, { ...where, expected: "a .zip file" });
  }
  const bytes = info.size <= IN_MEMORY_BYTES ? await Deno.readFile(archive) : undefined;
  let zip: yauzl.ZipFile;
  let all: yauzl.Entry[];
  try {
    zip = await openArchive(archive, bytes);
    all = await listEntries(zip);
  } catch (error) {
    throw new UserError(`${archive} is not a readable zip archive: ${firstLine(error)}`, {
      ...where,
      expected: "a .zip file",
    });
  }
  const root = (options.root ?? "").replace(/^\/+|\/+$/g, "");
  const prefix = root === "" ? "" : root + "/";
  const images = all
    .filter((e) => !e.fileName.endsWith("/") && !e.fileName.startsWith("__MACOSX/"))
    .filter((e) => e.fileName.startsWith(prefix) && isImageName(e.fileName))
    .map((entry) => ({ entry, relative: entry.fileName.slice(prefix.length) }))
    .sort((a, b) => compareCodeUnits(a.relative, b.relative));
  if (images.length === 0) {
    zip.close();
    const files = all.filter((e) => !e.fileName.endsWith("/"));
    if (files.length === 0) {
      throw new UserError(`zip archive ${archive} is empty`, {
        ...where,
        expected: "an archive of image files",
      });
    }
    const sample = files.slice(0, 3).map((e) => e.fileName).join(", ");
    throw new UserError(
      `zip archive ${archive} holds no images${root ? ` under '${root}'` : ""} ` +
        `(it holds ${files.length} files, e.g. ${sample})`,
      {
        file: options.configFile,
        path: root ? "dataset.root" : where.path,
        expected: `entries with extension ${IMAGE_EXTENSIONS.join(", ")} (any case)` +
          (root ? ` under '${root}/'` : ""),
      },
    );
  }
  const used = options.limit === undefined ? images : images.slice(0, options.limit);
  const entries: ImageEntry[] = used.map(({ entry }) => ({
    name: `${archive}:${entry.fileName}`,
    read: () => readEntry(zip, entry),
  }));
  return {
    location: archive,
    entries,
    labels: folderClassLabels(used.map((u) => u.relative)),
    skipped: [],
    contentHash: () =>
      bytes ? Promise.resolve(createHash("sha256").update(bytes).digest("hex")) : hashFile(archive),
    close: () => Promise.resolve(zip.close()),
  };
}
