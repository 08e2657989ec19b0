/**
 * Where a run lives: `<out>/<name>/seed-<seed>-<hash8>/`, hash8 being the first 8 hex digits of
 * the resolved config's sha256, and the rule that a complete run is never overwritten silently.
 * @module
 */
import { join } from "node:path";
import { UserError } from "../errors.ts";
import { readManifest } from "./manifest.ts";

/** The run folder of an experiment with config hash `hash`. */
export function runFolder(
  outRoot: string,
  run: { name: string; seed: number; hash: string },
): string {
  return join(outRoot, run.name, `seed-${run.seed}-${run.hash.slice(0, 8)}`);
}

/** Throws a {@linkcode UserError} when `dir` holds a complete run (without `--force`). */
export async function refuseCompleteRun(dir: string): Promise<void> {
  const previous = await readManifest(dir);
  if (previous?.status === "complete") {
    throw new UserError(
      `${dir} already holds a complete run of this experiment and seed; pass --force to replace ` +
        `it, or \`deno task sample ${dir}\` to sample it again`,
    );
  }
}

/**
 * Makes `dir` ready for a new run: refuses a complete run unless `force`, clears any earlier
 * (failed, interrupted or forced) contents, and creates the folder.
 */
export async function prepareRunFolder(dir: string, options: { force: boolean }): Promise<void> {
  if (!options.force) await refuseCompleteRun(dir);
  await Deno.remove(dir, { recursive: true }).catch((err) => {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  });
  await Deno.mkdir(dir, { recursive: true });
}
