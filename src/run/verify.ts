/**
 * `verify`: re-runs the config a run folder recorded, in a temporary folder, and compares the
 * artifacts hash by hash.
 * @module
 */
import { join } from "node:path";
import { ExperimentSchema } from "../../schemas/experiment.ts";
import { UserError } from "../errors.ts";
import { readManifest } from "./manifest.ts";
import { runExperiment } from "./runner.ts";

/** One artifact's verdict. */
export interface ArtifactCheck {
  /** Path relative to the run folder. */
  path: string;
  /** Whether the re-run produced the same bytes. */
  status: "match" | "differs" | "missing" | "extra";
}

/** The result of {@link verifyRun}. */
export interface VerifyResult {
  /** Every deterministic artifact of either run. */
  checks: ArtifactCheck[];
  /** True when every artifact matches. */
  identical: boolean;
  /** The temporary folder of the re-run (removed unless `keep`). */
  rerunDir: string;
}

/** Re-runs `runDir`'s recorded config and seed and compares its artifacts with the original. */
export async function verifyRun(
  runDir: string,
  options: { log?: (line: string) => void; keep?: boolean } = {},
): Promise<VerifyResult> {
  const manifest = await readManifest(runDir);
  if (manifest === null) {
    throw new UserError(`${runDir} is not a run folder (no readable manifest.json)`, {
      expected: "a folder written by `deno task run`",
    });
  }
  if (manifest.status !== "complete") {
    throw new UserError(
      `${runDir} is a ${manifest.status} run; only complete runs can be verified`,
    );
  }
  const raw = JSON.parse(await Deno.readTextFile(join(runDir, "config.json")));
  const config = ExperimentSchema.parse(raw);
  const outRoot = await Deno.makeTempDir({ prefix: "ddpm-lab-verify-" });
  try {
    const result = await runExperiment(
      {
        config,
        file: manifest.source.file,
        chain: manifest.source.chain,
        overrides: manifest.source.overrides,
      },
      { outRoot, retrain: true, log: options.log ?? (() => {}) },
    );
    const rerun = result.manifest!;
    const paths = [
      ...new Set([...Object.keys(manifest.artifacts), ...Object.keys(rerun.artifacts)]),
    ]
      .sort();
    const checks = paths.map((path): ArtifactCheck => {
      const a = manifest.artifacts[path];
      const b = rerun.artifacts[path];
      const status = a === undefined
        ? "extra"
        : b === undefined
        ? "missing"
        : a === b
        ? "match"
        : "differs";
      return { path, status };
    });
    return { checks, identical: checks.every((c) => c.status === "match"), rerunDir: result.dir };
  } finally {
    if (!options.keep) await Deno.remove(outRoot, { recursive: true }).catch(() => {});
  }
}
