/**
 * Shared fixtures of the end-to-end tests: a tiny experiment (24 faces of 8x8, a 73,875-parameter
 * U-Net, T = 8, three steps per epoch) and helpers to run it in temporary folders.
 * @module
 */
import { join } from "node:path";
import { main } from "../src/cli/mod.ts";
import { loadExperiment } from "../src/config/mod.ts";
import { runExperiment } from "../src/run/runner.ts";
import type { RunOptions, RunResult } from "../src/run/types.ts";

/** The ddpm-lab checkout. */
export const ROOT: string = new URL("..", import.meta.url).pathname;

/** Avatar cache of the tests (kept apart from the user's). */
export const TEST_CACHE: string = join(ROOT, ".cache", "test-avatars");

/** A tiny experiment: 3 steps per epoch, 2 epochs, 4 samples in 2 columns (22 x 22 px grid). */
export const TINY = {
  name: "tiny",
  dataset: { kind: "avatars", count: 24, renderSize: 16 },
  transform: { size: 8 },
  schedule: { kind: "linear", timesteps: 8 },
  model: { width: 8, multipliers: [1, 2] },
  train: { epochs: 2, batchSize: 8, logEvery: 1 },
  sampler: { count: 4, batchSize: 4, gridColumns: 2 },
};

/** TINY conditioned on two balanced attributes, one grid row per background colour. */
export const TINY_COND = {
  ...TINY,
  name: "tiny-cond",
  dataset: {
    ...TINY.dataset,
    attributes: {
      glasses: { probability: 50, groups: { yes: ["variant*"] }, balanced: true },
      backgroundColor: { values: ["#ffffff", "#b6e3f4"], balanced: true },
    },
  },
  model: {
    ...TINY.model,
    conditioning: {
      attributes: ["backgroundColor", "glasses"],
      width: 8,
      tokens: 2,
      crossAttention: { levels: [1], heads: 2, dimHead: 4 },
      pUncond: 0.25,
    },
  },
  train: { ...TINY.train, epochs: 3 },
  sampler: { ...TINY.sampler, labels: { kind: "grid", attribute: "backgroundColor" } },
};

/** Writes `body` (an object as JSON, or raw text) as `name` in a new temporary folder. */
export async function experimentFile(body: unknown = TINY, name = "exp.json"): Promise<string> {
  const path = join(await Deno.makeTempDir(), name);
  await Deno.writeTextFile(path, typeof body === "string" ? body : JSON.stringify(body, null, 2));
  return path;
}

/** Loads `file` with `--set` overrides and runs it quietly (a new temporary outputs root by default). */
export async function runFile(
  file: string,
  options: Partial<RunOptions> & { sets?: string[] } = {},
): Promise<RunResult> {
  const loaded = await loadExperiment(file, { sets: options.sets ?? [] });
  return await runExperiment(loaded, {
    outRoot: options.outRoot ?? await Deno.makeTempDir(),
    log: () => {},
    cacheDir: TEST_CACHE,
    ...options,
  });
}

/** Runs the CLI in this process: its exit code and everything it printed (stdout and stderr). */
export async function cli(args: string[]): Promise<{ code: number; out: string }> {
  const lines: string[] = [];
  const { log, error } = console;
  console.log = (...a: unknown[]) => lines.push(a.join(" "));
  console.error = (...a: unknown[]) => lines.push(a.join(" "));
  try {
    return { code: await main(args), out: lines.join("\n") };
  } finally {
    console.log = log;
    console.error = error;
  }
}
