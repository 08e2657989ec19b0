/**
 * Resuming from the command line: the exact command that resumes an interrupted run, and
 * `--resume` given without the run's original overrides, which finds the interrupted run of the
 * experiment file under the outputs root (or says which ones there are and how to resume each).
 * @module
 */
import { relative, resolve } from "node:path";
import { UserError } from "../errors.ts";
import { listRuns, type RunEntry } from "./list.ts";
import { readManifest } from "./manifest.ts";

/** Quotes `word` for a POSIX shell when it holds anything but safe characters. */
export function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/**
 * The `deno task run` command line of experiment `file` with `overrides` (each `path=value`, as
 * the manifest records them) under `outRoot`, then `flags` (`--resume`, more `--set`s...); paths
 * relative to the current folder when inside it.
 */
export function runCommandLine(
  file: string,
  options: { overrides: readonly string[]; outRoot: string; flags?: readonly string[] },
): string {
  const here = (p: string) => {
    const rel = relative(Deno.cwd(), resolve(p));
    return rel.startsWith("..") ? resolve(p) : rel;
  };
  const words = ["deno", "task", "run", here(file)];
  for (const o of options.overrides) words.push("--set", o);
  if (resolve(options.outRoot) !== resolve("outputs")) words.push("--out", here(options.outRoot));
  words.push(...(options.flags ?? []));
  return words.map(shellQuote).join(" ");
}

/** The command that resumes the run of `file` with `overrides` under `outRoot`. */
export function resumeCommand(
  file: string,
  options: { overrides: readonly string[]; outRoot: string },
): string {
  return runCommandLine(file, { ...options, flags: ["--resume"] });
}

/**
 * For `--resume` when `dir` (the run folder of the config as given) holds no run: the overrides
 * of the one interrupted or failed run of the same experiment file under `outRoot`, so that the
 * caller can reload the experiment with them. Null when `dir` holds a run (resume it as usual).
 * Throws a {@linkcode UserError} that lists the candidates with their resume commands when there
 * is none or more than one.
 */
export async function findInterruptedRun(
  dir: string,
  options: { file: string; name: string; outRoot: string },
): Promise<RunEntry | null> {
  if (await readManifest(dir)) return null;
  const file = resolve(options.file);
  const runs = (await listRuns(options.outRoot)).filter((r) =>
    resolve(r.manifest.source.file) === file
  );
  const open = runs.filter((r) => r.manifest.status !== "complete");
  if (open.length === 1) return open[0];
  const command = (r: RunEntry) =>
    `  ${r.dir} (${r.manifest.status}): ` +
    resumeCommand(r.manifest.source.file, {
      overrides: r.manifest.source.overrides,
      outRoot: options.outRoot,
    });
  if (open.length === 0) {
    const complete = runs.length > 0
      ? ` (${runs.length} complete: ${runs.map((r) => r.dir).join(", ")})`
      : "";
    throw new UserError(
      `--resume: no interrupted run of ${options.file} under ${options.outRoot}${complete}`,
      { expected: "an interrupted or failed run (start the run without --resume)" },
    );
  }
  throw new UserError(
    `--resume: ${open.length} interrupted runs of ${options.file} under ${options.outRoot}; ` +
      `resume one with its overrides:\n${open.map(command).join("\n")}`,
  );
}
