/**
 * The `eval` section end to end: evaluations during training (eval.jsonl), the manifest summary,
 * loss.png, reproducibility, and the `eval`, `fid`, `diff` and `runs` commands on the result.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { main } from "../src/cli/mod.ts";
import { decodePng, encodePng } from "../src/io/image.ts";
import { diffRuns } from "../src/run/diff.ts";
import { formatRunTable, listRuns } from "../src/run/list.ts";
import { readManifest } from "../src/run/manifest.ts";
import { experimentFile, runFile, TINY } from "./helpers.ts";

const WITH_EVAL = {
  ...TINY,
  name: "tiny-eval",
  eval: {
    every: 1,
    samples: 6,
    resize: 80,
    kidSubsets: 10,
    kidSubsetSize: 4,
    metrics: ["kid", "fid", "diversity"],
  },
};

// deno-lint-ignore no-explicit-any
type Json = any;

async function lines(path: string): Promise<Json[]> {
  return (await Deno.readTextFile(path)).trim().split("\n").map((l) => JSON.parse(l));
}

/** Captures console.log while `f` runs. */
async function captured(f: () => Promise<number>): Promise<{ code: number; out: string }> {
  const out: string[] = [];
  const log = console.log;
  const error = console.error;
  console.log = (...a: unknown[]) => out.push(a.join(" "));
  console.error = (...a: unknown[]) => out.push(a.join(" "));
  try {
    return { code: await f(), out: out.join("\n") };
  } finally {
    console.log = log;
    console.error = error;
  }
}

Deno.test("eval section: eval.jsonl per epoch, summary, loss.png, same bytes twice, commands", async () => {
  const file = await experimentFile(WITH_EVAL);
  const outRoot = await Deno.makeTempDir();
  const first = await runFile(file, { outRoot });
  assert.equal(first.status, "complete");
  const dir = first.dir;

  const evals = await lines(join(dir, "eval.jsonl"));
  assert.deepEqual(evals.map((e) => [e.epoch, e.step, e.final ?? false]), [[1, 3, false], [
    2,
    6,
    true,
  ]]);
  for (const e of evals) {
    // 6 samples: KID subsets of 3, so that they differ and the std is not round-off
    assert.ok(e.metrics.kid_iv3m5_std > 1e-9, `std ${e.metrics.kid_iv3m5_std}`);
    assert.ok(e.metrics.diversity_iv3m5 > 0 && e.metrics.diversity_iv3m5_real > 0);
    assert.ok(e.metrics.fid_iv3m5 > 0, "an untrained model's samples are far from the faces");
    assert.ok(e.metrics.fid_iv3m5 > e.floor.fid_iv3m5, "samples are worse than real vs real");
    assert.equal(e.floor.n, 6);
    assert.equal(e.protocol.network.layer, "mixed5");
    assert.equal(e.protocol.network.resize, 80);
    assert.equal(e.protocol.fid.n, 6);
    assert.deepEqual(
      [e.protocol.kid.subsets, e.protocol.kid.subsetSize],
      [10, 3],
    );
    assert.equal(e.protocol.reference.count, 6);
    assert.equal(e.protocol.samples.steps, 8);
    assert.equal(e.protocol.backend, "wasm");
  }
  const manifest = (await readManifest(dir))!;
  assert.equal(manifest.summary.kid_iv3m5, evals[1].metrics.kid_iv3m5);
  assert.equal(manifest.summary.fid_iv3m5, evals[1].metrics.fid_iv3m5);
  assert.equal(manifest.summary.eval_n, 6);
  assert.equal(manifest.summary.floor_fid_iv3m5, evals[1].floor.fid_iv3m5);
  assert.ok(manifest.artifacts["eval.jsonl"]);
  assert.ok(manifest.artifacts["loss.png"]);
  assert.ok(manifest.volatileArtifacts["eval_timings.jsonl"]);
  const plot = await decodePng(await Deno.readFile(join(dir, "loss.png")));
  assert.ok(plot.width >= 640 && plot.height >= 400, `${plot.width}x${plot.height}`);

  // same file, same seed: the same bytes, eval.jsonl and loss.png included
  const second = await runFile(file, { outRoot: await Deno.makeTempDir() });
  const again = (await readManifest(second.dir))!;
  assert.deepEqual(again.artifacts, manifest.artifacts);

  // runs and diff show the metrics
  const table = formatRunTable(await listRuns(outRoot));
  assert.match(table, /fid_iv3m5 +judge_tv|fid_iv3m5 +kid_iv3m5/);
  const d = await diffRuns(dir, second.dir);
  const row = d.metrics.find((m) => m.name === "kid_iv3m5")!;
  assert.equal(row.a, row.b);

  // deno task eval: DDIM from the checkpoint, eval.json, shown by diff
  const evaluated = await captured(() =>
    main(["eval", dir, "--samples", "4", "--set", "sampler.kind=ddim", "--set", "sampler.steps=4"])
  );
  assert.equal(evaluated.code, 0, evaluated.out);
  const evalJson = JSON.parse(await Deno.readTextFile(join(dir, "eval.json")));
  assert.equal(evalJson.summary.eval_n, 4);
  assert.equal(evalJson.protocol.samples.sampler.kind, "ddim");
  assert.equal(evalJson.protocol.samples.steps, 4);
  assert.ok(evalJson.wallSeconds > 0);
  assert.equal(evalJson.engine.name, "tfjs");
  // The same evaluation with the samples from ONNX Runtime: the same numbers to ~1e-4.
  const viaOrt = await captured(() =>
    main([
      "eval",
      dir,
      "--samples",
      "4",
      "--set",
      "sampler.kind=ddim",
      "--set",
      "sampler.steps=4",
      "--set",
      "sampler.engine=onnxruntime",
    ])
  );
  assert.equal(viaOrt.code, 0, viaOrt.out);
  assert.match(viaOrt.out, /s in the network on onnxruntime cpu\)/);
  const ortJson = JSON.parse(await Deno.readTextFile(join(dir, "eval.json")));
  assert.equal(ortJson.engine.name, "onnxruntime");
  assert.ok(ortJson.networkSeconds >= 0 && ortJson.networkSeconds <= ortJson.wallSeconds);
  for (const metric of ["kid_iv3m5", "fid_iv3m5"]) {
    const [t, o] = [evalJson.metrics[metric], ortJson.metrics[metric]];
    assert.ok(Math.abs(t - o) <= 1e-3 * Math.max(1, Math.abs(t)), `${metric}: tfjs ${t}, ort ${o}`);
  }
  const withEval = await diffRuns(dir, second.dir);
  assert.ok(withEval.metrics.some((m) => m.name === "eval.json fid_iv3m5" && m.a !== null));
  const refused = await captured(() => main(["eval", dir, "--set", "model.width=4"]));
  assert.equal(refused.code, 2);
  assert.match(refused.out, /only change the sampler and eval sections/);

  // deno task fid: two folders (one of them a run's samples), and bad folders
  const folder = await Deno.makeTempDir();
  for (let i = 0; i < 5; i++) {
    const data = new Uint8Array(8 * 8 * 3).map((_, k) => (k * 37 + i * 11) % 256);
    await Deno.writeFile(join(folder, `${i}.png`), await encodePng({ width: 8, height: 8, data }));
  }
  const fid = await captured(() => main(["fid", dir, folder, "--json", "--resize", "80"]));
  assert.equal(fid.code, 0, fid.out);
  const result = JSON.parse(fid.out);
  assert.equal(result.protocol.fid.n, 4);
  assert.equal(result.protocol.samples.count, 4);
  assert.equal(result.protocol.reference.count, 5);
  assert.ok(result.metrics.fid_iv3m5 > 0 && Number.isFinite(result.metrics.kid_iv3m5));
  const empty = await Deno.makeTempDir();
  const bad = await captured(() => main(["fid", empty, folder]));
  assert.equal(bad.code, 2);
  assert.match(bad.out, /contains no images/);
  await Deno.writeTextFile(join(empty, "broken.png"), "not a png");
  const broken = await captured(() => main(["fid", folder, empty]));
  assert.equal(broken.code, 2);
  assert.match(broken.out, /broken\.png/);
  for (const d of [outRoot, folder, empty]) await Deno.remove(d, { recursive: true });
});

Deno.test("eval section: a judge without labels, or a missing feature model, is bad input (exit 2, no folder)", async () => {
  const images = await Deno.makeTempDir();
  for (let i = 0; i < 3; i++) {
    const data = new Uint8Array(8 * 8 * 3).fill(40 * i);
    await Deno.writeFile(join(images, `${i}.png`), await encodePng({ width: 8, height: 8, data }));
  }
  const outRoot = await Deno.makeTempDir();
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ metrics: ["kid", "judge"] }, /eval\.metrics: the dataset .* has no labels to judge/],
    [
      { features: "missing/model.json" },
      /eval\.features: feature model .*missing\/model\.json cannot be read/,
    ],
  ];
  for (const [evalSection, message] of cases) {
    const file = await experimentFile({
      ...TINY,
      dataset: { kind: "folder", path: images },
      eval: evalSection,
    });
    const run = await captured(() => main(["run", file, "--out", outRoot]));
    assert.equal(run.code, 2, run.out);
    assert.match(run.out, message);
    assert.match(run.out, new RegExp(file.replaceAll("/", "\\/")));
  }
  assert.deepEqual([...Deno.readDirSync(outRoot)], []);
  await Deno.remove(images, { recursive: true });
  await Deno.remove(outRoot, { recursive: true });
});
