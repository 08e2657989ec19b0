import assert from "node:assert/strict";
import { dirname, join, relative, resolve } from "node:path";
import {
  canonicalJson,
  configHash,
  formatConfigSummary,
  type LoadedExperiment,
  loadExperiment,
  type LoadOptions,
} from "../src/config/mod.ts";
import { lineColumnAt } from "../src/config/json.ts";
import { UserError } from "../src/errors.ts";
import { experimentJsonSchema } from "../schemas/generate.ts";

/** Writes `files` (name -> JSON value, or raw text) to a fresh temporary directory. */
async function writeFiles(files: Record<string, unknown>): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "ddpm_config_test_" });
  for (const [name, content] of Object.entries(files)) {
    const text = typeof content === "string" ? content : JSON.stringify(content, null, 2);
    await Deno.mkdir(dirname(join(dir, name)), { recursive: true });
    await Deno.writeTextFile(join(dir, name), text);
  }
  return dir;
}

async function load(
  files: Record<string, unknown>,
  main: string,
  options: LoadOptions = {},
): Promise<LoadedExperiment & { dir: string }> {
  const dir = await writeFiles(files);
  try {
    return { ...(await loadExperiment(join(dir, main), options)), dir };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Loads and expects a UserError; returns it with the temporary directory. */
async function loadError(
  files: Record<string, unknown>,
  main: string,
  options: LoadOptions = {},
): Promise<{ error: UserError; dir: string }> {
  const dir = await writeFiles(files);
  try {
    await loadExperiment(join(dir, main), options);
  } catch (error) {
    assert.ok(error instanceof UserError, `expected a UserError, got ${error}`);
    return { error, dir };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  assert.fail("expected loadExperiment to throw");
}

Deno.test("defaults are filled in and $schema is dropped", async () => {
  const { config, file, chain, overrides, dir } = await load({
    "exp.json": { $schema: "../schemas/experiment.schema.json", name: "tiny" },
  }, "exp.json");
  assert.equal(file, join(dir, "exp.json"));
  assert.deepEqual(chain, [file]);
  assert.deepEqual(overrides, []);
  assert.deepEqual(config, {
    name: "tiny",
    seed: 0,
    backend: "wasm",
    dataset: { kind: "avatars", count: 12000, renderSize: 64 },
    transform: { size: 32, horizontalFlip: true },
    schedule: {
      kind: "linear",
      timesteps: 200,
      betaStart: 1e-4,
      betaEnd: 0.02,
      scaleWithT: false,
    },
    model: {
      kind: "unet",
      width: 16,
      multipliers: [1, 2, 4, 8],
      channels: 3,
      groups: 4,
      resBlocks: 2,
      attention: { kind: "linear", levels: "all", heads: 4, dimHead: 32 },
      middleAttention: "full",
      dropout: 0,
      prediction: "eps",
    },
    loss: { kind: "l1" },
    optimizer: {
      kind: "adam",
      lr: 1e-3,
      beta1: 0.9,
      beta2: 0.999,
      epsilon: 1e-8,
      warmupSteps: 0,
      lrDecay: "none",
      minLr: 0,
    },
    train: {
      epochs: 20,
      batchSize: 32,
      shuffle: true,
      dropLast: true,
      logEvery: 100,
      checkpointEvery: 1,
      workers: 1,
      microBatch: 8,
    },
    sampler: {
      kind: "ddpm",
      variance: "posterior",
      initialNoise: "gaussian",
      stepNoise: true,
      clipX0: false,
      eta: 0,
      engine: "tfjs",
      count: 32,
      batchSize: 32,
      gridColumns: 8,
    },
  });
});

Deno.test("extends: deep merge, arrays replaced, kind change replaces the section", async () => {
  const { config, file, chain, dir } = await load({
    "root.json": {
      name: "root",
      seed: 3,
      dataset: { kind: "avatars", count: 100, renderSize: 32 },
      model: { width: 32, multipliers: [1, 2, 2, 4] },
      train: { epochs: 2, batchSize: 8, logEvery: 5 },
    },
    "sub/middle.json": { extends: "../root.json", name: "middle", train: { epochs: 4 } },
    "sub/leaf.json": {
      extends: "./middle.json",
      name: "leaf",
      dataset: { kind: "folder", path: "images" },
      model: { multipliers: [1, 2] },
    },
  }, "sub/leaf.json");
  assert.equal(file, join(dir, "sub", "leaf.json"));
  assert.deepEqual(chain, [file, join(dir, "sub", "middle.json"), join(dir, "root.json")]);
  assert.equal(config.name, "leaf");
  assert.equal(config.seed, 3);
  // kind avatars -> folder: replaced, so `count` and `renderSize` do not leak into folder.
  assert.deepEqual(config.dataset, { kind: "folder", path: join(dir, "sub", "images") });
  // deep merge: width from root, multipliers replaced whole by the leaf.
  assert.equal(config.model.width, 32);
  assert.deepEqual(config.model.multipliers, [1, 2]);
  // train: epochs from middle, batchSize and logEvery from root, the rest defaults.
  assert.deepEqual(config.train, {
    epochs: 4,
    batchSize: 8,
    shuffle: true,
    dropLast: true,
    logEvery: 5,
    checkpointEvery: 1,
    workers: 1,
    microBatch: 8,
  });
});

Deno.test("extends: a same-kind section merges; a base's dataset.path is relative to the base", async () => {
  const { config, dir } = await load({
    "base.json": { name: "base", dataset: { kind: "folder", path: "data", limit: 10 } },
    "child/exp.json": { extends: "../base.json", loss: { kind: "l2" } },
  }, "child/exp.json");
  assert.deepEqual(config.dataset, { kind: "folder", path: join(dir, "data"), limit: 10 });
  assert.equal(config.loss.kind, "l2");
  assert.equal(config.name, "base");
});

Deno.test("--set: numbers, booleans, strings, arrays and a whole section", async () => {
  const { config, overrides } = await load(
    { "exp.json": { name: "exp", dataset: { kind: "avatars", count: 50 } } },
    "exp.json",
    {
      sets: [
        "train.epochs=3",
        "optimizer.lr=0.0005",
        "train.shuffle=false",
        "name=renamed",
        'description="quoted string"',
        "model.multipliers=[1,2]",
        "schedule.timesteps=50",
        'dataset={"kind":"folder","path":"/data/faces"}',
      ],
    },
  );
  assert.equal(config.train.epochs, 3);
  assert.equal(config.optimizer.lr, 0.0005);
  assert.equal(config.train.shuffle, false);
  assert.equal(config.name, "renamed");
  assert.equal(config.description, "quoted string");
  assert.deepEqual(config.model.multipliers, [1, 2]);
  // schedule was not written: the default kind is kept.
  assert.deepEqual(config.schedule, {
    kind: "linear",
    timesteps: 50,
    betaStart: 1e-4,
    betaEnd: 0.02,
    scaleWithT: false,
  });
  // a whole section with another kind replaces the avatars one (no `count` left over).
  assert.deepEqual(config.dataset, { kind: "folder", path: "/data/faces" });
  assert.equal(overrides.length, 8);
  assert.equal(overrides[0], "train.epochs=3");
});

Deno.test("--set: kind change then a key of the new kind; relative path from the cwd", async () => {
  const { config } = await load({ "exp.json": { name: "exp" } }, "exp.json", {
    sets: ["dataset.kind=folder", "dataset.path=some/images", "dataset.limit=5"],
  });
  assert.deepEqual(config.dataset, {
    kind: "folder",
    path: resolve(Deno.cwd(), "some/images"),
    limit: 5,
  });
});

Deno.test("--seed overrides the file's seed and a --set seed", async () => {
  const { config, overrides } = await load({ "exp.json": { name: "exp", seed: 1 } }, "exp.json", {
    sets: ["seed=2"],
    seed: 42,
  });
  assert.equal(config.seed, 42);
  assert.deepEqual(overrides, ["seed=2", "seed=42"]);
});

Deno.test("invalid JSON: file, line and column (V8's position)", async () => {
  const text = '{\n  "name": "x",\n  "train": { "epochs": 3, }\n}\n';
  const { error, dir } = await loadError({ "exp.json": text }, "exp.json");
  const file = join(dir, "exp.json");
  assert.equal(error.details.file, file);
  assert.match(error.message, /invalid JSON at line 3, column 27/);
  assert.match(error.message, /trailing commas are not allowed/);
  assert.match(error.message, /expected a double-quoted property name/);
  assert.ok(error.message.startsWith(`${file}: `));
});

Deno.test("invalid JSON: line and column where V8 gives no position", async () => {
  const { error } = await loadError(
    { "exp.json": '{\n  "name": "x",\n  "seed": oops\n}' },
    "exp.json",
  );
  assert.match(error.message, /invalid JSON at line 3, column 11: unexpected character 'o'/);
  assert.match(error.message, /expected a JSON value/);
  const { error: truncated } = await loadError({ "exp.json": '{\n  "name": ' }, "exp.json");
  assert.match(truncated.message, /line 2, column 11: unexpected end of input/);
});

Deno.test("lineColumnAt counts 1-based lines and columns", () => {
  assert.deepEqual(lineColumnAt("abc", 0), { line: 1, column: 1 });
  assert.deepEqual(lineColumnAt("ab\ncd\nef", 4), { line: 2, column: 2 });
  assert.deepEqual(lineColumnAt("ab\n", 3), { line: 2, column: 1 });
});

Deno.test("unknown keys: top level and nested, with the valid keys", async () => {
  const { error: top, dir } = await loadError({ "exp.json": { name: "x", epochs: 3 } }, "exp.json");
  assert.equal(
    top.message,
    `${
      join(dir, "exp.json")
    }:3:3: epochs: unknown key 'epochs' (expected one of $schema, extends, ` +
      "name, description, seed, backend, dataset, transform, schedule, model, loss, optimizer, " +
      "train, sampler, recovery, eval, sweep, launcher)",
  );
  const { error: nested, dir: dir2 } = await loadError(
    { "exp.json": { name: "x", dataset: { kind: "avatars", path: "/x" } } },
    "exp.json",
  );
  assert.equal(
    nested.message,
    `${join(dir2, "exp.json")}:5:5: dataset.path: unknown key 'path' ` +
      "(expected one of kind, count, renderSize, attributes)",
  );
});

Deno.test("an unknown key in a base file names the base file", async () => {
  const { error, dir } = await loadError({
    "base.json": { name: "base", train: { epochz: 3 } },
    "exp.json": { extends: "base.json", name: "exp" },
  }, "exp.json");
  assert.equal(error.details.file, join(dir, "base.json"));
  assert.equal(error.details.path, "train.epochz");
  assert.match(error.message, /^.*base\.json:4:5: train\.epochz: unknown key 'epochz'/);
});

Deno.test("wrong type and out-of-range values", async () => {
  const { error: type, dir } = await loadError(
    { "exp.json": { name: "x", train: { shuffle: "yes" } } },
    "exp.json",
  );
  assert.equal(
    type.message,
    `${join(dir, "exp.json")}:4:5: train.shuffle: Invalid input: expected boolean, received string`,
  );
  const { error: range, dir: dir2 } = await loadError(
    { "exp.json": { name: "x", schedule: { kind: "linear", timesteps: 5000 } } },
    "exp.json",
  );
  assert.equal(
    range.message,
    `${
      join(dir2, "exp.json")
    }:5:5: schedule.timesteps: 5000 is too big (expected an integer <= 4000)`,
  );
  assert.deepEqual(range.details, {
    file: join(dir2, "exp.json"),
    line: 5,
    column: 5,
    path: "schedule.timesteps",
    expected: "an integer <= 4000",
  });
  const { error: float } = await loadError(
    { "exp.json": { name: "x", optimizer: { lr: 0 } } },
    "exp.json",
  );
  assert.match(float.message, /optimizer\.lr: 0 is too small \(expected a number > 0\)/);
  const { error: option } = await loadError(
    { "exp.json": { name: "x", sampler: { variance: "gamma" } } },
    "exp.json",
  );
  assert.match(
    option.message,
    /sampler\.variance: invalid value "gamma" \(expected one of posterior, beta\)/,
  );
  const { error: kind } = await loadError(
    { "exp.json": { name: "x", dataset: { kind: "mnist" } } },
    "exp.json",
  );
  assert.match(
    kind.message,
    /dataset\.kind: unknown kind "mnist" \(expected one of avatars, folder, zip, cartoonset\)/,
  );
});

Deno.test("several problems are reported together, one per line", async () => {
  const { error, dir } = await loadError({
    "exp.json": {
      name: "x",
      schedule: { kind: "linear", timesteps: 0 },
      loss: { kind: "l3" },
      train: { epochs: 1.5 },
    },
  }, "exp.json");
  const file = join(dir, "exp.json");
  const lines = error.message.split("\n");
  assert.equal(lines[0], `${file}: 3 problems in the experiment:`);
  assert.deepEqual(lines.slice(1).map((line) => line.trim()), [
    `${file}:5:5: schedule.timesteps: 0 is too small (expected an integer >= 1)`,
    `${file}:8:5: loss.kind: unknown kind "l3" (expected one of l1, l2, huber)`,
    `${file}:11:5: train.epochs: 1.5 is not an integer (expected an integer)`,
  ]);
});

Deno.test("cross-field checks and a missing name name the file and the path", async () => {
  const { error, dir } = await loadError(
    { "exp.json": { name: "x", model: { width: 6 } } },
    "exp.json",
  );
  assert.match(
    error.message,
    new RegExp(`^${escape(join(dir, "exp.json"))}:3:3: model\\.groups: `),
  );
  const { error: noName, dir: dir2 } = await loadError({ "exp.json": {} }, "exp.json");
  assert.equal(
    noName.message,
    `${join(dir2, "exp.json")}: name: missing required key (expected a string)`,
  );
});

Deno.test("missing extends target names the extending file, `extends` and the path", async () => {
  const { error, dir } = await loadError(
    { "exp.json": { extends: "bases/nope.json", name: "x" } },
    "exp.json",
  );
  assert.equal(error.details.file, join(dir, "exp.json"));
  assert.equal(error.details.path, "extends");
  assert.ok(error.message.startsWith(`${join(dir, "exp.json")}: extends: `));
  assert.ok(error.message.includes(join(dir, "bases", "nope.json")));
});

Deno.test("a missing experiment file is a UserError naming it", async () => {
  const dir = "/nonexistent-ddpm-lab-dir";
  await assert.rejects(
    () => loadExperiment(join(dir, "absent.json")),
    (error: unknown) =>
      error instanceof UserError && error.message.startsWith(join(dir, "absent.json")),
  );
});

Deno.test("extends cycles are detected", async () => {
  const { error, dir } = await loadError({
    "a.json": { extends: "b.json", name: "a" },
    "b.json": { extends: "./a.json" },
  }, "a.json");
  assert.equal(error.details.file, join(dir, "b.json"));
  assert.equal(error.details.path, "extends");
  assert.match(error.message, /extends cycle: .*a\.json -> .*b\.json -> .*a\.json/);
  const { error: self } = await loadError({ "s.json": { extends: "s.json" } }, "s.json");
  assert.match(self.message, /extends cycle/);
});

Deno.test("unknown --set paths name the flag and list the valid keys", async () => {
  const files = { "exp.json": { name: "x" } };
  const { error: section } = await loadError(files, "exp.json", { sets: ["foo.bar=1"] });
  assert.ok(section.message.startsWith("--set foo.bar=1: foo: unknown key 'foo'"));
  assert.match(section.message, /expected one of name, description, seed, backend, dataset/);
  const { error: key } = await loadError(files, "exp.json", { sets: ["train.epoch=1"] });
  assert.equal(
    key.message,
    "--set train.epoch=1: train.epoch: unknown key 'epoch' " +
      "(expected one of epochs, batchSize, shuffle, dropLast, maxSteps, logEvery, checkpointEvery, workers, microBatch)",
  );
  // `path` is no key of the default avatars dataset.
  const { error: kind } = await loadError(files, "exp.json", { sets: ["dataset.path=/x"] });
  assert.match(
    kind.message,
    /^--set dataset\.path=\/x: dataset\.path: unknown key 'path' for dataset kind 'avatars'/,
  );
  const { error: deep } = await loadError(files, "exp.json", { sets: ["train.epochs.x=1"] });
  assert.match(deep.message, /^--set train\.epochs\.x=1: train\.epochs\.x: /);
  const { error: noValue } = await loadError(files, "exp.json", { sets: ["train.epochs"] });
  assert.match(noValue.message, /^--set train\.epochs: missing '='/);
  const { error: extend } = await loadError(files, "exp.json", { sets: ["extends=a.json"] });
  assert.match(extend.message, /^--set extends=a\.json: extends: unknown key 'extends'/);
});

Deno.test("wrong --set types come from validation and name the flag", async () => {
  const files = { "exp.json": { name: "x" } };
  const { error } = await loadError(files, "exp.json", { sets: ["train.epochs=abc"] });
  assert.equal(
    error.message,
    "--set train.epochs=abc: train.epochs: Invalid input: expected number, received string",
  );
  const { error: section } = await loadError(files, "exp.json", {
    sets: ['train={"epochs":3,"bogus":1}'],
  });
  assert.match(section.message, /^--set train=\{"epochs":3,"bogus":1\}: train\.bogus: unknown key/);
  const { error: seed } = await loadError(files, "exp.json", { seed: -1 });
  assert.match(seed.message, /^--seed -1: seed: -1 is too small/);
});

Deno.test("every error names its file (or flag) and its JSON path", async () => {
  const cases: [Record<string, unknown>, string[], RegExp][] = [
    [{ name: "x", foo: 1 }, [], /: foo: /],
    [{ name: "x", model: { bar: 1 } }, [], /: model\.bar: /],
    [{ name: "x", seed: "1" }, [], /: seed: /],
    [{ name: "x", transform: { size: 1000 } }, [], /: transform\.size: /],
    [{ name: "x", extends: "missing.json" }, [], /: extends: /],
    [{ name: "x" }, ["sampler.count=0"], /^--set sampler\.count=0: sampler\.count: /],
  ];
  for (const [content, sets, pattern] of cases) {
    const { error, dir } = await loadError({ "exp.json": content }, "exp.json", { sets });
    assert.match(error.message, pattern);
    if (sets.length === 0) assert.ok(error.message.startsWith(join(dir, "exp.json")));
    assert.ok(error.details.path, `no JSON path in: ${error.message}`);
  }
});

Deno.test("schemas/experiment.schema.json is current", async () => {
  const onDisk = JSON.parse(
    await Deno.readTextFile(new URL("../schemas/experiment.schema.json", import.meta.url)),
  );
  assert.deepEqual(
    onDisk,
    experimentJsonSchema(),
    "schemas/experiment.schema.json is stale: run `deno task schema`",
  );
});

Deno.test("canonicalJson and configHash do not depend on key order", async () => {
  assert.equal(
    canonicalJson({ b: 1, a: { d: [2, { z: 1, y: 0 }], c: null } }),
    '{"a":{"c":null,"d":[2,{"y":0,"z":1}]},"b":1}',
  );
  assert.equal(canonicalJson({ a: undefined, b: 1 }), '{"b":1}');
  const { config: one } = await load(
    { "exp.json": { name: "x", train: { epochs: 2, batchSize: 4 }, seed: 5 } },
    "exp.json",
  );
  const { config: two } = await load(
    { "exp.json": { seed: 5, train: { batchSize: 4, epochs: 2 }, name: "x" } },
    "exp.json",
  );
  assert.equal(canonicalJson(one), canonicalJson(two));
  assert.match(configHash(one), /^[0-9a-f]{64}$/);
  assert.equal(configHash(one), configHash(two));
  const { config: three } = await load(
    { "exp.json": { seed: 6, train: { batchSize: 4, epochs: 2 }, name: "x" } },
    "exp.json",
  );
  assert.notEqual(configHash(one), configHash(three));
});

Deno.test("formatConfigSummary names every section", async () => {
  const { config } = await load({ "exp.json": { name: "summary", seed: 9 } }, "exp.json");
  const summary = formatConfigSummary(config);
  const labels = summary.split("\n").map((line) => line.split(/\s+/)[0]);
  assert.deepEqual(labels, [
    "name",
    "seed",
    "backend",
    "dataset",
    "transform",
    "schedule",
    "model",
    "loss",
    "optimizer",
    "train",
    "sampler",
  ]);
  assert.match(summary, /^name\s+summary$/m);
  assert.match(summary, /^seed\s+9$/m);
  assert.match(summary, /avatars: 12000 faces/);
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

// Layering: every layer is a patch, validated once on the merged result.

const partialBase = {
  name: "base",
  dataset: { kind: "folder", path: "images", limit: 5 },
  schedule: { kind: "cosine", timesteps: 100, s: 0.01 },
  loss: { kind: "huber", delta: 2 },
  sampler: { kind: "ddim", steps: 10, count: 4 },
};

Deno.test("a child file overrides part of each kind-discriminated section", async () => {
  const { config, dir } = await load({
    "base.json": partialBase,
    "child.json": {
      extends: "base.json",
      name: "child",
      dataset: { limit: 7 },
      schedule: { timesteps: 50 },
      loss: { delta: 0.5 },
      sampler: { eta: 0.5 },
    },
  }, "child.json");
  assert.deepEqual(config.dataset, { kind: "folder", path: join(dir, "images"), limit: 7 });
  assert.deepEqual(config.schedule, { kind: "cosine", timesteps: 50, s: 0.01, maxBeta: 0.999 });
  assert.deepEqual(config.loss, { kind: "huber", delta: 0.5 });
  assert.deepEqual(
    [config.sampler.kind, config.sampler.steps, config.sampler.count, config.sampler.eta],
    ["ddim", 10, 4, 0.5],
  );
});

Deno.test("the issue's example: a child of a shipped file changes one schedule field", async () => {
  const shipped = resolve(new URL("../experiments/q1-t500.json", import.meta.url).pathname);
  const dir = await Deno.makeTempDir({ prefix: "ddpm_config_test_" });
  try {
    const child = join(dir, "child.json");
    const parent = relative(dir, shipped);
    await Deno.writeTextFile(
      child,
      JSON.stringify({ extends: parent, schedule: { timesteps: 1000 } }),
    );
    const { config } = await loadExperiment(child);
    const base = (await loadExperiment(shipped)).config;
    assert.deepEqual(config, { ...base, schedule: { ...base.schedule, timesteps: 1000 } });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a bad value in a child file is reported at its own path, line and column", async () => {
  const child = '{\n  "extends": "base.json",\n  "schedule": {\n    "betaEnd": 1.5\n  }\n}\n';
  const { error, dir } = await loadError({
    "base.json": { name: "base", schedule: { kind: "linear", timesteps: 100 } },
    "child.json": child,
  }, "child.json");
  assert.equal(
    error.message,
    `${join(dir, "child.json")}:4:5: schedule.betaEnd: 1.5 is too big (expected a number < 1)`,
  );
  assert.deepEqual(
    [error.details.file, error.details.line, error.details.column],
    [join(dir, "child.json"), 4, 5],
  );
});

Deno.test("comments in a file are allowed and positions count their lines", async () => {
  const text = [
    "// a quick run",
    "{",
    '  "name": "x", /* the run name */',
    "  // the schedule:",
    '  "schedule": { "timesteps": 0 }',
    "}",
  ].join("\n");
  const { error, dir } = await loadError({ "exp.json": text }, "exp.json");
  assert.equal(
    error.message,
    `${join(dir, "exp.json")}:5:17: schedule.timesteps: 0 is too small (expected an integer >= 1)`,
  );
  const { config } = await load(
    { "exp.json": text.replace('"timesteps": 0', '"timesteps": 7') },
    "exp.json",
  );
  assert.deepEqual([config.name, config.schedule.kind, config.schedule.timesteps], [
    "x",
    "linear",
    7,
  ]);
});

Deno.test("--set and extends give the same merged config", async () => {
  const dir = await writeFiles({
    "base.json": partialBase,
    "child.json": {
      extends: "base.json",
      dataset: { limit: 7 },
      schedule: { timesteps: 50 },
      loss: { delta: 0.5 },
      sampler: { eta: 0.5 },
    },
  });
  try {
    const sets = ["dataset.limit=7", "schedule.timesteps=50", "loss.delta=0.5", "sampler.eta=0.5"];
    const viaSet = (await loadExperiment(join(dir, "base.json"), { sets })).config;
    const viaFile = (await loadExperiment(join(dir, "child.json"))).config;
    assert.equal(viaSet.schedule.timesteps, 50);
    assert.deepEqual(viaSet, viaFile);
    assert.equal(configHash(viaSet), configHash(viaFile));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a kind change replaces the section, from a file or from --set", async () => {
  const { config: viaFile } = await load({
    "base.json": partialBase,
    "child.json": { extends: "base.json", schedule: { kind: "quadratic" }, loss: { kind: "l2" } },
  }, "child.json");
  const quadratic = { kind: "quadratic", timesteps: 200, betaStart: 1e-4, betaEnd: 0.02 };
  assert.deepEqual(viaFile.schedule, quadratic);
  assert.deepEqual(viaFile.loss, { kind: "l2" });
  const { config: viaSet } = await load({ "base.json": partialBase }, "base.json", {
    sets: ["schedule.kind=quadratic", "loss.kind=l2"],
  });
  assert.deepEqual(viaSet.schedule, quadratic);
  assert.deepEqual(viaSet.loss, { kind: "l2" });
});

Deno.test("an unknown kind names itself and lists the known ones", async () => {
  const files = { "exp.json": { name: "x" } };
  const { error } = await loadError(files, "exp.json", { sets: ["dataset.kind=tar"] });
  assert.equal(
    error.message,
    '--set dataset.kind=tar: dataset.kind: unknown kind "tar" ' +
      "(expected one of avatars, folder, zip, cartoonset)",
  );
  const { error: then } = await loadError(files, "exp.json", {
    sets: ["dataset.kind=tar", "dataset.path=/x"],
  });
  assert.equal(then.message, error.message);
});

Deno.test("a file that is not an object, or a bad extends, fails before merging", async () => {
  const { error: array, dir } = await loadError({ "exp.json": "[1, 2]" }, "exp.json");
  assert.equal(array.message, `${join(dir, "exp.json")}: expected a JSON object`);
  const { error: extend, dir: dir2 } = await loadError(
    { "exp.json": { name: "x", extends: 3 } },
    "exp.json",
  );
  assert.equal(
    extend.message,
    `${
      join(dir2, "exp.json")
    }:3:3: extends: invalid value 3 (expected a path relative to this file)`,
  );
});

Deno.test("loading a config and a dry run do not load TensorFlow.js", async () => {
  // The static import graph of the command line (dynamic imports load the runner on demand).
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", new URL("../src/cli/main.ts", import.meta.url).pathname],
    stdout: "piped",
    stderr: "null",
  }).output();
  type Dependency = { specifier: string; code?: { specifier?: string }; isDynamic?: boolean };
  type Module = { specifier: string; dependencies?: Dependency[] };
  const graph = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    roots: string[];
    modules: Module[];
    redirects?: Record<string, string>;
  };
  const modules = new Map(graph.modules.map((m) => [m.specifier, m]));
  const seen = new Set<string>();
  const stack = [...graph.roots];
  while (stack.length > 0) {
    const specifier = stack.pop()!;
    if (seen.has(specifier)) continue;
    seen.add(specifier);
    for (const dep of modules.get(specifier)?.dependencies ?? []) {
      const target = dep.code?.specifier;
      if (target === undefined || dep.isDynamic) continue;
      stack.push(graph.redirects?.[target] ?? target);
    }
  }
  const loaded = [...seen];
  assert.ok(loaded.some((s) => s.endsWith("/src/config/mod.ts")));
  assert.ok(loaded.some((s) => s.endsWith("/src/run/describe.ts")));
  assert.deepEqual(loaded.filter((s) => /tensorflow|tfjs|\/src\/tf\.ts$/.test(s)), []);
});
