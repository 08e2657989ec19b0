/**
 * `verify`: re-runs the config a run folder recorded, in a temporary folder, and compares the
 * artifacts hash by hash.
 * @module
 */
import { join } from "node:path";
import { ExperimentSchema } from "../../schemas/experiment.ts";
import { UserError } from "../errors.ts";
import { type ArtifactStatus, compareArtifacts, readManifest } from "./manifest.ts";
import { runExperiment } from "./runner.ts";

/** One artifact's verdict. */
export interface ArtifactCheck {
  /** Path relative to the run folder. */
  path: string;
  /** Whether the re-run produced the same bytes. */
  status: "match" | "differs" | "missing" | "extra";
}

/** A re-run's artifact against the original's: same bytes, other bytes, or absent on one side. */
const VERDICT: Record<ArtifactStatus, ArtifactCheck["status"]> = {
  identical: "match",
  differs: "differs",
  "only-a": "missing",
  "only-b": "extra",
};

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
    const checks = compareArtifacts(manifest.artifacts, rerun.artifacts)
      .map(({ path, status }): ArtifactCheck => ({ path, status: VERDICT[status] }));
    return { checks, identical: checks.every((c) => c.status === "match"), rerunDir: result.dir };
  } finally {
    if (!options.keep) await Deno.remove(outRoot, { recursive: true }).catch(() => {});
  }
}
