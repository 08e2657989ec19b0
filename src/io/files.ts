/**
 * File helpers shared by run folders and caches: atomic writes and content hashes.
 *
 * Every write goes to a temporary file in the target's folder and is renamed into place, so a
 * reader never sees half a file; a write that fails (a full disk, a folder that is not
 * writable) removes its temporary file and throws a {@linkcode WriteError} naming the file it
 * was writing and how many bytes it needed.
 * @module
 */
import { createHash } from "node:crypto";
import { basename, dirname, join } from "node:path";

/** A file (or a set of files) that could not be written; the original error is its `cause`. */
export class WriteError extends Error {
  /** The file being written (its final name, not the temporary one). */
  readonly path: string;
  /** Bytes the write needed: of this file, or of every file of a set. */
  readonly bytes: number;
  /** The system error code of the cause (`ENOSPC`, `EACCES`, `EROFS`, ...), when it has one. */
  readonly code: string | undefined;

  /** Wraps `cause`, the failure of writing `path` (`bytes` long, or the set's total). */
  constructor(path: string, options: { bytes: number; cause: unknown }) {
    const why = options.cause instanceof Error ? options.cause.message : String(options.cause);
    super(`could not write ${path} (${formatBytes(options.bytes)}): ${why}`, {
      cause: options.cause,
    });
    this.name = "WriteError";
    this.path = path;
    this.bytes = options.bytes;
    this.code = errorCode(options.cause);
  }
}

/** The system error code (`ENOSPC`, `EACCES`, ...) of a Deno or Node error, if it has one. */
export function errorCode(err: unknown): string | undefined {
  if (err instanceof WriteError) return err.code;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === "string" && code !== "") return code;
  // Deno's messages end their description with "(os error N)".
  const errno = /\(os error (\d+)\)/.exec(err instanceof Error ? err.message : "")?.[1];
  return errno ? ERRNO_CODES[Number(errno)] : undefined;
}

const ERRNO_CODES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  5: "EIO",
  13: "EACCES",
  28: "ENOSPC",
  30: "EROFS",
  122: "EDQUOT",
};

/** `512 B`, `3.4 KiB`, `1.2 MiB`, `2.0 GiB`. */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

function byteLength(data: Uint8Array | string): number {
  return typeof data === "string" ? new TextEncoder().encode(data).length : data.length;
}

function temporaryName(path: string): string {
  return join(
    dirname(path),
    `.${basename(path)}.tmp-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`,
  );
}

async function writeTemporary(tmp: string, data: Uint8Array | string): Promise<void> {
  if (typeof data === "string") await Deno.writeTextFile(tmp, data);
  else await Deno.writeFile(tmp, data);
}

/**
 * Writes `data` to `path` atomically: a temporary file in the same folder, then a rename.
 * Throws a {@linkcode WriteError} (the temporary file removed) when it cannot.
 */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const tmp = temporaryName(path);
  try {
    await writeTemporary(tmp, data);
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw new WriteError(path, { bytes: byteLength(data), cause: err });
  }
}

/**
 * Writes a set of files that belong together (a checkpoint): every one to a temporary file
 * first, then each renamed into place in the given order (so put the file that says the set is
 * complete last). When any write fails, every temporary file is removed and the files already
 * in place are left as they were; the {@linkcode WriteError} gives the set's total size.
 */
export async function writeFilesAtomic(
  files: readonly { path: string; data: Uint8Array | string }[],
): Promise<void> {
  const total = files.reduce((sum, f) => sum + byteLength(f.data), 0);
  const written: { tmp: string; path: string }[] = [];
  try {
    for (const file of files) {
      const tmp = temporaryName(file.path);
      written.push({ tmp, path: file.path });
      await writeTemporary(tmp, file.data);
    }
  } catch (err) {
    for (const { tmp } of written) await Deno.remove(tmp).catch(() => {});
    throw new WriteError(written.at(-1)!.path, { bytes: total, cause: err });
  }
  for (const [i, { tmp, path }] of written.entries()) {
    try {
      await Deno.rename(tmp, path);
    } catch (err) {
      for (const rest of written.slice(i)) await Deno.remove(rest.tmp).catch(() => {});
      throw new WriteError(path, { bytes: total, cause: err });
    }
  }
}

/** Hex sha256 of bytes. */
export function sha256Hex(data: Uint8Array | string): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Hex sha256 of a file's contents. */
export async function sha256File(path: string): Promise<string> {
  return sha256Hex(await Deno.readFile(path));
}

/** Every file below `root` as a path relative to it, sorted, skipping names that start with '.'. */
export async function listFilesRecursive(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string, prefix: string): Promise<void> => {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.name.startsWith(".")) continue;
      const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
      if (entry.isDirectory) await walk(join(dir, entry.name), rel);
      else if (entry.isFile) out.push(rel);
    }
  };
  await walk(root, "");
  return out.sort();
}
