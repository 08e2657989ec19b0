/**
 * Conditional generation (issue 11, seed 004): the conditioning path's shapes and names, the
 * label encodings, label dropout, the guidance formula, null-label sampling, what to sample
 * (grid, fixed values), the caption strip, and a conditional run end to end (reproducible,
 * resumable, reused by the training cache for other guidance weights).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ExperimentSchema, ModelSchema } from "../schemas/experiment.ts";
import { guidanceMix, guidedDenoiser } from "../src/diffusion/guidance.ts";
import { generate } from "../src/diffusion/generate.ts";
import { makeSchedule } from "../src/diffusion/schedule.ts";
import { captionRows } from "../src/io/caption.ts";
import { decodePng, makeGrid } from "../src/io/image.ts";
import {
  countParameters,
  createModel,
  encodeLabels,
  exportParams,
  modelShape,
} from "../src/model/mod.ts";
import { deriveRng } from "../src/rng.ts";
import { conditionedAttributes, planLabels } from "../src/run/conditions.ts";
import { guidanceTableMarkdown } from "../src/run/guidance_table.ts";
import { readManifest } from "../src/run/manifest.ts";
import { resampleRun } from "../src/run/resample.ts";
import type { ConditionalScorer } from "../src/run/types.ts";
import { tf } from "../src/tf.ts";
import { initBackend } from "../src/backend/mod.ts";
import { stepCondition } from "../src/train/mod.ts";
import { experimentFile, runFile, TINY, TINY_COND } from "./helpers.ts";

await initBackend("wasm");

const COND = {
  attributes: ["hair", "glasses"],
  encoding: "onehot",
  layers: 2,
  width: 8,
  tokens: 2,
  crossAttention: { levels: [1], middle: true, heads: 2, dimHead: 4 },
};

const SMALL = { width: 8, multipliers: [1, 2] };

Deno.test("an unconditional config builds today's network: 2,430,595 parameters", () => {
  const course = ModelSchema.parse({});
  assert.equal(course.conditioning, undefined);
  assert.equal(countParameters(modelShape(course)), 2_430_595);
  // The resolved config of an existing experiment gains no field.
  const resolved = ExperimentSchema.parse({ name: "x" });
  assert.equal("conditioning" in resolved.model, false);
  assert.equal("labels" in resolved.sampler, false);
  assert.equal("guidance" in resolved.sampler, false);
});

Deno.test("conditioning path: names, shapes, parameter count, same unconditional part", async () => {
  const config = ModelSchema.parse({ ...SMALL, conditioning: COND });
  const sizes = [3, 2];
  const cond = createModel(config, { rng: deriveRng(0, "model/init"), labelSizes: sizes });
  const plain = createModel(ModelSchema.parse(SMALL), { rng: deriveRng(0, "model/init") });
  const shapes = new Map(cond.net.params.map((p) => [p.name, p.shape]));
  // tau: encoded (3 + 2 = 5) -> 8 -> GELU -> 2 tokens x 8; the null embedding; the time path.
  assert.deepEqual(shapes.get("tau.0.weight"), [5, 8]);
  assert.deepEqual(shapes.get("tau.2.weight"), [8, 16]);
  assert.deepEqual(shapes.get("null_embedding"), [16]);
  assert.deepEqual(shapes.get("cond_proj.weight"), [16, 32]);
  // Cross-attention at level 1 only (8 wide down, 16 up), in the middle (16), heads 2 x 4.
  assert.deepEqual(shapes.get("cross_attn.downs.1.to_q.weight"), [1, 1, 8, 8]);
  assert.deepEqual(shapes.get("cross_attn.ups.0.to_q.weight"), [1, 1, 16, 8]);
  assert.deepEqual(shapes.get("cross_attn.downs.1.to_k.weight"), [8, 8]);
  assert.deepEqual(shapes.get("cross_attn.mid.to_out.weight"), [1, 1, 8, 16]);
  assert.deepEqual(shapes.get("cross_attn.ups.0.to_v.weight"), [8, 8]);
  assert.equal(shapes.has("cross_attn.downs.0.to_q.weight"), false);
  assert.equal(shapes.has("cross_attn.ups.1.to_q.weight"), false);
  // Count by hand: tau 5*8+8 + 8*16+16; null 16; cond_proj 16*32+32; a cross block on dim 16:
  // norm 32 + q 128 + k 64 + v 64 + out 8*16+16 = 432 (middle, ups.0); on dim 8 (downs.1):
  // 16 + 64 + 64 + 64 + 72 = 280.
  const extra = (5 * 8 + 8) + (8 * 16 + 16) + 16 + (16 * 32 + 32) + 2 * 432 + 280;
  assert.equal(cond.net.parameterCount, plain.net.parameterCount + extra);
  // The unconditional part comes first with the same names and the same initial values.
  const a = await exportParams(plain);
  const b = await exportParams(cond);
  for (const [name, value] of a) assert.deepEqual(b.get(name)!.data, value.data, name);
  assert.deepEqual([...b.keys()].slice(0, a.size), [...a.keys()]);
  // Forward: labels in, an image-shaped output out; labels for the wrong batch are refused.
  const x = tf.randomNormal([3, 8, 8, 3], 0, 1, "float32", 1) as tf.Tensor4D;
  const t = tf.tensor1d([1, 4, 7]);
  const labels = Int32Array.from([0, 1, 2, 0, 1, 1]);
  const y = tf.tidy(() => cond.predict(x, t, { condition: { labels } }));
  assert.deepEqual(y.shape, [3, 8, 8, 3]);
  assert.throws(() => cond.predict(x, t, { condition: { labels: labels.subarray(0, 4) } }));
  assert.throws(
    () => plain.predict(x, t, { condition: { labels } }),
    /unconditional network/,
  );
  // Different labels give a different output (the labels reach the network).
  const y2 = tf.tidy(() =>
    cond.predict(x, t, { condition: { labels: Int32Array.from([2, 0, 2, 0, 2, 0]) } })
  );
  assert.ok(tf.max(tf.abs(tf.sub(y, y2))).dataSync()[0] > 1e-6);
  tf.dispose([x, t, y, y2]);
  cond.dispose();
  plain.dispose();
});

Deno.test("one-hot and integer encodings", () => {
  const labels = Int32Array.from([1, 0, 2, 1]);
  assert.deepEqual(
    [...encodeLabels(labels, { sizes: [3, 2], encoding: "onehot" })],
    [0, 1, 0, 1, 0, 0, 0, 1, 0, 1],
  );
  assert.deepEqual([...encodeLabels(labels, { sizes: [3, 2], encoding: "integer" })], [
    1,
    0,
    2,
    1,
  ]);
  assert.throws(() => encodeLabels(Int32Array.from([3, 0]), { sizes: [3, 2], encoding: "onehot" }));
  const integer = ModelSchema.parse({ ...SMALL, conditioning: { ...COND, encoding: "integer" } });
  const onehot = ModelSchema.parse({ ...SMALL, conditioning: COND });
  // tau's first layer reads 2 numbers instead of 3 + 2.
  assert.equal(
    countParameters(modelShape(onehot, [3, 2])) - countParameters(modelShape(integer, [3, 2])),
    3 * 8,
  );
});

Deno.test("label dropout: the configured rate, seeded per step, reproducible", () => {
  const n = 64;
  const labels = [new Int32Array(n).fill(2), Int32Array.from({ length: n }, (_, i) => i % 3)];
  let dropped = 0;
  const steps = 200;
  for (let step = 1; step <= steps; step++) {
    const c = stepCondition(labels, { seed: 7, step, columns: [1, 0], pUncond: 0.2 });
    dropped += c.drop!.reduce((s, d) => s + d, 0);
  }
  const rate = dropped / (n * steps);
  assert.ok(Math.abs(rate - 0.2) < 0.01, `rate ${rate}`);
  const a = stepCondition(labels, { seed: 7, step: 3, columns: [1, 0], pUncond: 0.2 });
  const b = stepCondition(labels, { seed: 7, step: 3, columns: [1, 0], pUncond: 0.2 });
  const c = stepCondition(labels, { seed: 7, step: 4, columns: [1, 0], pUncond: 0.2 });
  assert.deepEqual(a, b);
  assert.notDeepEqual(a.drop, c.drop);
  // Columns are picked in the conditioning order, row-major.
  assert.deepEqual([...a.labels.subarray(0, 6)], [0, 2, 1, 2, 2, 2]);
  // The draw is the stream train/uncond/step-<k>.
  const rng = deriveRng(7, "train/uncond/step-3");
  assert.deepEqual([...a.drop!], Array.from({ length: n }, () => rng.uniform() < 0.2 ? 1 : 0));
  const none = stepCondition(labels, { seed: 7, step: 3, columns: [0], pUncond: 0 });
  assert.equal(none.drop!.reduce((s, d) => s + d, 0), 0);
});

Deno.test("guidance: (1 + w) eps(x, c) - w eps(x, null), by hand", async () => {
  const c = [0.5, -1, 2, 0.25];
  const u = [0.1, 0.3, -0.5, 0.25];
  const w = 3;
  const mixed = tf.tidy(() =>
    guidanceMix({ conditional: tf.tensor1d(c), unconditional: tf.tensor1d(u) }, w).dataSync()
  );
  // 4·0.5 − 3·0.1 = 1.7; 4·(−1) − 3·0.3 = −4.9; 4·2 + 1.5 = 9.5; 4·0.25 − 0.75 = 0.25.
  assert.deepEqual([...mixed].map((v) => Number(v.toFixed(5))), [1.7, -4.9, 9.5, 0.25]);
  // As a denoiser: each call evaluates both and mixes; w = 0 is the conditional one itself.
  const calls: string[] = [];
  const conditional = (x: tf.Tensor4D) => (calls.push("c"), tf.add(x, 1) as tf.Tensor4D);
  const unconditional = (x: tf.Tensor4D) => (calls.push("u"), tf.mul(x, 2) as tf.Tensor4D);
  assert.equal(guidedDenoiser({ conditional, unconditional }, 0), conditional);
  const guided = guidedDenoiser({ conditional, unconditional }, 2);
  const x = tf.tensor4d([1, 2], [1, 1, 2, 1]);
  const out = await guided(x, tf.tensor1d([0])) as tf.Tensor4D;
  // 3·(x + 1) − 2·(2x) = 3 − x.
  assert.deepEqual([...out.dataSync()], [2, 1]);
  assert.deepEqual(calls, ["c", "u"]);
  tf.dispose([x, out]);
});

Deno.test("sampling with the null label equals unconditional sampling of the same network", async () => {
  const config = ModelSchema.parse({ ...SMALL, conditioning: COND });
  const model = createModel(config, { rng: deriveRng(1, "model/init"), labelSizes: [3, 2] });
  const schedule = makeSchedule({
    kind: "linear",
    timesteps: 6,
    betaStart: 1e-4,
    betaEnd: 0.02,
    scaleWithT: false,
  });
  const sampler = {
    kind: "ddpm",
    variance: "posterior",
    initialNoise: "gaussian",
    stepNoise: true,
    eta: 0,
  } as const;
  const n = 3;
  const sample = async (condition?: { labels: Int32Array; drop: Uint8Array }) => {
    const x = await generate(
      (xt, t) => tf.tidy(() => model.predict(xt, t, { condition })),
      schedule,
      { shape: [n, 8, 8, 3], sampler, rng: deriveRng(5, "sample/noise") },
    );
    const values = Float32Array.from(x.dataSync());
    x.dispose();
    return values;
  };
  const unconditional = await sample();
  const nullLabels = await sample({
    labels: Int32Array.from([0, 1, 2, 0, 1, 1]),
    drop: new Uint8Array(n).fill(1),
  });
  assert.deepEqual(nullLabels, unconditional);
  const labelled = await sample({
    labels: Int32Array.from([0, 1, 2, 0, 1, 1]),
    drop: new Uint8Array(n),
  });
  assert.notDeepEqual(labelled, unconditional);
  model.dispose();
});

const LABELS = {
  attributes: [
    { name: "hair", count: 3, values: ["a", "b", "c"] },
    { name: "glasses", count: 2, values: ["none", "round"] },
    { name: "mouth", count: 2 },
  ],
  labels: [
    Int32Array.from([0, 1, 2, 0]),
    Int32Array.from([0, 1, 0, 1]),
    Int32Array.from([1, 1, 0, 0]),
  ],
};

Deno.test("what to sample: a grid row per value, fixed values by name or index, clear errors", () => {
  const conditioned = conditionedAttributes({ attributes: ["glasses", "hair"] }, {
    labels: LABELS,
  });
  assert.deepEqual(conditioned.columns, [1, 0]);
  const grid = planLabels({ kind: "grid", attribute: "hair", values: { glasses: "round" } }, {
    conditioned,
    labels: LABELS,
    count: 99,
    columns: 2,
    seed: 0,
  });
  assert.equal(grid.count, 6);
  assert.deepEqual([...grid.labels], [1, 0, 1, 0, 1, 1, 1, 1, 1, 2, 1, 2]);
  assert.deepEqual(grid.rows, [
    "hair=a, glasses=round",
    "hair=b, glasses=round",
    "hair=c, glasses=round",
  ]);
  assert.deepEqual(grid.legend[2], { glasses: "round", hair: "b" });
  const fixed = planLabels({ kind: "fixed", values: { hair: 2 } }, {
    conditioned,
    labels: LABELS,
    count: 5,
    columns: 4,
    seed: 0,
  });
  assert.equal(fixed.count, 5);
  assert.deepEqual(fixed.rows, ["hair=c", "hair=c"]);
  for (let i = 0; i < 5; i++) assert.equal(fixed.labels[i * 2 + 1], 2);
  // Labels drawn from the dataset: each image's labels are those of one dataset image.
  const drawn = planLabels(undefined, {
    conditioned,
    labels: LABELS,
    count: 8,
    columns: 4,
    seed: 3,
  });
  for (let i = 0; i < 8; i++) {
    const pair = [drawn.labels[2 * i], drawn.labels[2 * i + 1]];
    assert.ok(
      [0, 1, 2, 3].some((j) => LABELS.labels[1][j] === pair[0] && LABELS.labels[0][j] === pair[1]),
    );
  }
  assert.throws(
    () =>
      planLabels({ kind: "fixed", values: { hair: "d" } }, {
        conditioned,
        labels: LABELS,
        count: 2,
        columns: 2,
        seed: 0,
        file: "x.json",
      }),
    /x\.json: sampler\.labels\.values\.hair: hair has no value "d" \(expected an index 0\.\.2 or one of a, b, c\)/,
  );
  assert.throws(
    () =>
      planLabels({ kind: "grid", attribute: "mouth" }, {
        conditioned,
        labels: LABELS,
        count: 2,
        columns: 2,
        seed: 0,
      }),
    /sampler\.labels\.attribute: mouth is not a conditioned attribute/,
  );
  assert.throws(
    () => conditionedAttributes({ attributes: ["hat"] }, { labels: LABELS, file: "e.json" }),
    /e\.json: model\.conditioning\.attributes\.0: the dataset has no label attribute hat \(expected one of hair, glasses, mouth\)/,
  );
});

Deno.test("caption strip: the grid scaled up, a white strip with one caption per row", async () => {
  const grid = makeGrid(new Float32Array(4 * 8 * 8 * 3).fill(1), {
    count: 4,
    height: 8,
    width: 8,
    channels: 3,
    columns: 2,
  });
  const out = await captionRows(grid, {
    rows: ["hair=a", "hair=b"],
    cell: 10,
    padding: 2,
    scale: 4,
    stripWidth: 60,
  });
  assert.equal(out.width, 60 + grid.width * 4);
  assert.equal(out.height, grid.height * 4);
  // The grid's pixels are there, scaled: a white image pixel at the grid's (2, 2).
  const at = (x: number, y: number) => out.data[(y * out.width + x) * 3];
  assert.equal(at(60 + 2 * 4, 2 * 4), 255);
  assert.equal(at(60, 0), 0, "padding stays black");
  // Some caption pixel is dark inside the strip (text was drawn), none in an empty strip.
  let dark = 0;
  for (let y = 0; y < out.height; y++) for (let x = 0; x < 60; x++) if (at(x, y) < 128) dark++;
  assert.ok(dark > 0);
});

Deno.test("guidance table: one row per w, one column per metric", () => {
  const md = guidanceTableMarkdown([
    { w: 0, metrics: { "accuracy/hair": 0.5, kid: 0.0123 } },
    { w: 3, metrics: { "accuracy/hair": 0.75 } },
  ]);
  assert.equal(
    md,
    "| w | accuracy/hair | kid |\n| --- | --- | --- |\n| 0 | 0.500 | 0.012 |\n| 3 | 0.750 |  |\n",
  );
});

/** A tiny conditional experiment on avatar attributes (24 faces, 8x8). */
/** A fake judge: "accuracy" is the fraction of requested values equal to 0, KID a constant. */
const fakeScorer: ConditionalScorer = (samples) => {
  const out: Record<string, number> = {};
  for (const [name, wanted] of Object.entries(samples.requested)) {
    out[`accuracy/${name}`] = wanted.filter((v) => v === 0).length / samples.count;
  }
  out.kid = samples.w / 100;
  return Promise.resolve(out);
};

Deno.test("a conditional run: reproducible, resumable, guidance grids through the training cache", async () => {
  const file = await experimentFile(TINY_COND);
  const out = await Deno.makeTempDir();
  const a = await runFile(file, { outRoot: out });
  const b = await runFile(file);
  const ma = (await readManifest(a.dir))!;
  const mb = (await readManifest(b.dir))!;
  delete ma.artifacts["timings.jsonl"];
  delete mb.artifacts["timings.jsonl"];
  assert.deepEqual(ma.artifacts, mb.artifacts);
  assert.ok(ma.artifacts["samples-labels.json"]);
  const png = await decodePng(await Deno.readFile(join(a.dir, "samples.png")));
  // Two rows (one per background colour) of two 8x8 images, scaled 8x, plus the caption strip.
  assert.equal(png.height, 22 * 8);
  assert.ok(png.width > 22 * 8);
  const legend = JSON.parse(await Deno.readTextFile(join(a.dir, "samples-labels.json")));
  assert.deepEqual(legend.rows, ["backgroundColor=#ffffff", "backgroundColor=#b6e3f4"]);
  assert.equal(legend.images[3].backgroundColor, "#b6e3f4");

  // Interrupted in the middle of epoch 1, resumed: the same bytes.
  const controller = new AbortController();
  const stopOut = await Deno.makeTempDir();
  const stopped = await runFile(file, {
    outRoot: stopOut,
    signal: controller.signal,
    onStep: ({ step }) => step === 4 && controller.abort(),
  });
  assert.equal(stopped.status, "interrupted");
  const resumed = await runFile(file, { outRoot: stopOut, resume: true });
  const mr = (await readManifest(resumed.dir))!;
  delete mr.artifacts["timings.jsonl"];
  assert.deepEqual(mr.artifacts, ma.artifacts);

  // Guidance weights: sampling only (training reused), one grid per w and the table.
  const cfg = await runFile(file, {
    outRoot: out,
    sets: ["name=tiny-cfg", "sampler.guidance=[0,2]"],
    scoreConditional: fakeScorer,
  });
  const mc = (await readManifest(cfg.dir))!;
  assert.equal(mc.reusedTraining?.dir, a.dir);
  assert.ok(mc.artifacts["samples-w0.png"] && mc.artifacts["samples-w2.png"]);
  assert.equal(mc.artifacts["samples-w0.png"], ma.artifacts["samples.png"]);
  assert.notEqual(mc.artifacts["samples-w2.png"], mc.artifacts["samples-w0.png"]);
  const table = JSON.parse(await Deno.readTextFile(join(cfg.dir, "guidance.json")));
  assert.deepEqual(table, [
    {
      w: 0,
      "accuracy/backgroundColor": 0.5,
      "accuracy/glasses": table[0]["accuracy/glasses"],
      kid: 0,
    },
    {
      w: 2,
      "accuracy/backgroundColor": 0.5,
      "accuracy/glasses": table[0]["accuracy/glasses"],
      kid: 0.02,
    },
  ]);
  assert.match(
    await Deno.readTextFile(join(cfg.dir, "guidance.md")),
    /^\| w \| accuracy\/backgroundColor/,
  );
  // deno task sample of the conditional run: the same grid with the same sampler; guidance
  // weights and ONNX Runtime without retraining (within one grey level of tfjs).
  const again = await resampleRun(a.dir, { log: () => {} });
  assert.deepEqual(
    await Deno.readFile(join(again.dir!, "samples.png")),
    await Deno.readFile(join(a.dir, "samples.png")),
  );
  const guided = await resampleRun(a.dir, {
    sets: ["sampler.guidance=[0,2]", "sampler.engine=onnxruntime"],
    log: () => {},
  });
  const files = [...Deno.readDirSync(guided.dir!)].map((e) => e.name).sort();
  assert.deepEqual(files, [
    "sample.json",
    "samples-labels.json",
    "samples-w0.png",
    "samples-w2.png",
    "samples.png",
  ]);
  assert.equal(
    JSON.parse(await Deno.readTextFile(join(guided.dir!, "sample.json"))).engine.name,
    "onnxruntime",
  );
  const [w0, run0] = await Promise.all(
    [join(guided.dir!, "samples-w0.png"), join(a.dir, "samples.png")].map(async (f) =>
      decodePng(await Deno.readFile(f))
    ),
  );
  assert.ok(w0.data.every((v, i) => Math.abs(v - run0.data[i]) <= 1), "w = 0 as in the run");
  assert.ok(![...Deno.readDirSync(join(a.dir, "samples"))].some((e) => e.name.includes("partial")));
});

Deno.test("a conditional config with unknown attributes or values fails before the run folder", async () => {
  const out = await Deno.makeTempDir();
  const noLabels = await experimentFile({
    ...TINY_COND,
    model: { ...TINY_COND.model, conditioning: { attributes: ["hat"] } },
    sampler: TINY.sampler,
  });
  await assert.rejects(
    () => runFile(noLabels, { outRoot: out }),
    /model\.conditioning\.attributes\.0: the dataset has no label attribute hat/,
  );
  const badValue = await experimentFile({
    ...TINY_COND,
    sampler: { ...TINY.sampler, labels: { kind: "fixed", values: { glasses: "maybe" } } },
  });
  await assert.rejects(
    () => runFile(badValue, { outRoot: out }),
    /sampler\.labels\.values\.glasses/,
  );
  assert.deepEqual([...Deno.readDirSync(out)], []);
  // Guidance on an unconditional model is a schema error.
  assert.throws(
    () => ExperimentSchema.parse({ name: "x", sampler: { guidance: [1] } }),
    /only a conditional model takes it/,
  );
});
