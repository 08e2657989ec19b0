/**
 * What every file-based dataset source (folder, zip, cartoonset) hands to the loader: the images
 * to decode, their labels, the problems found while listing, and the content hash of the data.
 * @module
 */
import { createHash } from "node:crypto";
import type { ImageEntry, SkippedFile } from "./decode.ts";
import { forEachLimited } from "./decode.ts";
import type { LabelSet } from "./labels.ts";

/** An opened source: nothing decoded yet. */
export interface ImageSource {
  /** Absolute path of the folder or archive. */
  location: string;
  /** The images, in load order (sorted paths, `limit` applied), one label row each. */
  entries: ImageEntry[];
  /** Labels of `entries` (folder classes, Cartoon Set attributes), if the source has any. */
  labels?: LabelSet;
  /** Files left out while listing (a CSV without its image, ...), with reasons. */
  skipped: SkippedFile[];
  /**
   * sha256 identifying the bytes the images come from: of the archive file for a zip; for a
   * folder, of the `sha256sum`-style listing (`<sha256>  <relative path>\n` per file read, in
   * order), so renaming, editing, adding or removing a file changes it.
   */
  contentHash(): Promise<string>;
  /** Releases open files. */
  close(): Promise<void>;
}

/** The `sha256sum`-style hash of files `paths` (relative to `root`), read 8 at once. */
export async function hashFileListing(root: string, paths: readonly string[]): Promise<string> {
  const sums = new Array<string>(paths.length);
  await forEachLimited(paths.length, async (i) => {
    const bytes = await Deno.readFile(`${root}/${paths[i]}`);
    sums[i] = createHash("sha256").update(bytes).digest("hex");
  }, { concurrency: 8 });
  const listing = createHash("sha256");
  paths.forEach((path, i) => listing.update(`${sums[i]}  ${path}\n`));
  return listing.digest("hex");
}

/** sha256 of a file's bytes, streamed (archives can be larger than memory). */
export async function hashFile(path: string): Promise<string> {
  const hash = createHash("sha256");
  const file = await Deno.open(path, { read: true });
  try {
    const buffer = new Uint8Array(1 << 20);
    for (;;) {
      const n = await file.read(buffer);
      if (n === null) break;
      hash.update(buffer.subarray(0, n));
    }
  } finally {
    file.close();
  }
  return hash.digest("hex");
}
