/**
 * `deno task judge <experiment.json> [--set path=value] [--json]`: trains (or loads from its
 * cache) the attribute judge of a labelled dataset and prints its held-out accuracy per
 * attribute (src/eval/judge.ts), on the run's backend and dataset (src/run/session.ts).
 * @module
 */
import { parseArgs } from "node:util";
import { loadExperiment } from "../../config/mod.ts";
import { UserError } from "../../errors.ts";

/** `deno task judge <experiment.json>`: exit 0 trained (or loaded), 2 bad input. */
export async function judgeCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { set: { type: "string", multiple: true }, json: { type: "boolean" } },
  });
  if (positionals.length !== 1) {
    throw new UserError(`expected one experiment file, got ${positionals.length}`, {
      expected: "deno task judge <experiment.json> [--set path=value]",
    });
  }
  const loaded = await loadExperiment(positionals[0], { sets: values.set ?? [] });
  const { RunSession } = await import("../../run/session.ts");
  const { labelledFromDataset, trainJudge } = await import("../../eval/mod.ts");
  const log = values.json ? () => {} : (l: string) => console.log(l);
  // The run's backend and dataset (no network).
  await using session = await RunSession.open(loaded, { purpose: "data", log });
  const judge = await trainJudge(labelledFromDataset(session.dataset!), {
    seed: loaded.config.seed,
    log,
  });
  const rows = judge.attributes.map((a) => ({
    attribute: a.name,
    values: a.count,
    accuracy: judge.accuracy[a.name],
    chance: judge.chance[a.name],
  }));
  if (values.json) {
    console.log(
      JSON.stringify({ heldOut: judge.heldOutCount, cached: judge.cached, rows }, null, 2),
    );
  } else {
    console.log(
      `held-out accuracy on ${judge.heldOutCount} real images` +
        `${judge.cached ? " (cached judge)" : ""}; chance = most frequent value`,
    );
    console.log(`  ${"attribute".padEnd(18)} values  accuracy  chance`);
    for (const r of rows) {
      console.log(
        `  ${r.attribute.padEnd(18)} ${String(r.values).padStart(6)}  ${
          r.accuracy.toFixed(3).padStart(8)
        }  ${r.chance.toFixed(3).padStart(6)}`,
      );
    }
  }
  judge.dispose();
  return 0;
}
