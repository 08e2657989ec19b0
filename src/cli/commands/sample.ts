/**
 * `deno task sample <run> [--seed N] [--count N] [--set sampler.path=value]`: samples a trained
 * run again into `<run>/samples/seed-<N>-<hash>/` (src/run/resample.ts).
 * @module
 */
import { parseArgs } from "node:util";
import { UserError } from "../../errors.ts";
import { parseSeed, positiveInt } from "../args.ts";
import { TerminalProgress } from "../progress.ts";
import { abortOnSignals } from "../signals.ts";

/** `deno task sample <run>`: exit 0 written, 2 bad input, 130 interrupted (nothing written). */
export async function sampleCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      set: { type: "string", multiple: true },
      seed: { type: "string" },
      count: { type: "string" },
    },
  });
  if (positionals.length !== 1) {
    throw new UserError(`expected one run folder, got ${positionals.length}`, {
      expected: "deno task sample <run> [--seed N] [--count N] [--set sampler.path=value]",
    });
  }
  const count = positiveInt("--count", values.count);
  const { resampleRun } = await import("../../run/resample.ts");
  const controller = new AbortController();
  const release = abortOnSignals(controller);
  const bars = Deno.stdout.isTerminal() ? new TerminalProgress() : undefined;
  try {
    const result = await resampleRun(positionals[0], {
      sets: values.set ?? [],
      seed: parseSeed(values.seed),
      count,
      signal: controller.signal,
      progress: bars,
      log: bars?.log,
    });
    return result.dir === null ? 130 : 0;
  } finally {
    bars?.stop();
    release();
  }
}
