/** The import guard of CI (.ci/check_imports.ts): cycles and upward imports are found. */
import assert from "node:assert/strict";
import { findCycles, importProblems, layerOf } from "../.ci/check_imports.ts";

Deno.test("import guard: finds every cycle, and imports against the layers", () => {
  const edges = new Map([
    ["src/model/a.ts", ["src/model/b.ts"]],
    ["src/model/b.ts", ["src/model/c.ts", "src/rng.ts"]],
    ["src/model/c.ts", ["src/model/a.ts"]],
    ["src/rng.ts", []],
    ["src/eval/x.ts", ["src/run/y.ts"]],
    ["src/run/y.ts", ["src/eval/x.ts"]],
    ["src/run/z.ts", ["src/eval/x.ts", "src/io/files.ts"]],
    ["tests/t.ts", ["src/cli/mod.ts"]],
  ]);
  assert.deepEqual(findCycles(edges), [
    ["src/eval/x.ts", "src/run/y.ts"],
    ["src/model/a.ts", "src/model/b.ts", "src/model/c.ts"],
  ]);
  const problems = importProblems(edges);
  assert.equal(problems.filter((p) => p.startsWith("import cycle")).length, 2);
  assert.deepEqual(problems.filter((p) => p.startsWith("upward")), [
    "upward import (see ARCHITECTURE.md): src/eval/x.ts imports src/run/y.ts",
  ]);
  assert.equal(layerOf("tests/t.ts"), undefined);
  assert.ok(layerOf("src/model/unet.ts")! < layerOf("src/gpu/engine/plan.ts")!);
  assert.ok(layerOf("src/run/runner.ts")! < layerOf("src/cli/mod.ts")!);
});
