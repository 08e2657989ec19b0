/**
 * A few training steps on the webgpu backend against wasm. Skipped (and says so) when
 * `navigator.gpu` gives no adapter or when DDPM_SKIP_WEBGPU=1. On Mesa's software adapter
 * (llvmpipe, Debian's `mesa-vulkan-drivers`) it takes about 12 s, mostly shader compilation.
 * @module
 */
import assert from "node:assert/strict";
import { initBackend } from "../src/backend/mod.ts";
import { ModelSchema, OptimizerSchema, ScheduleSchema } from "../schemas/experiment.ts";
import { makeSchedule } from "../src/diffusion/schedule.ts";
import { createModel } from "../src/model/mod.ts";
import { deriveRng } from "../src/rng.ts";
import { Adam } from "../src/train/optimizer.ts";
import { trainStep } from "../src/train/step.ts";

async function adapterDescription(): Promise<string | undefined> {
  if (Deno.env.get("DDPM_SKIP_WEBGPU") === "1") return undefined;
  try {
    const adapter = await navigator.gpu?.requestAdapter();
    return adapter ? adapter.info.description || "unnamed adapter" : undefined;
  } catch {
    return undefined;
  }
}

const adapter = await adapterDescription();
if (adapter === undefined) {
  console.log("backend_webgpu_test: skipped (no WebGPU adapter, or DDPM_SKIP_WEBGPU=1)");
}

async function losses(backend: "wasm" | "webgpu"): Promise<number[]> {
  await initBackend(backend);
  const model = createModel(ModelSchema.parse({ width: 8, multipliers: [1, 2] }), {
    rng: deriveRng(0, "model/init"),
  });
  const schedule = makeSchedule(ScheduleSchema.parse({ kind: "linear", timesteps: 50 }));
  const optimizer = new Adam(model.params, OptimizerSchema.parse({}));
  const n = 4;
  const size = n * 8 * 8 * 3;
  const out: number[] = [];
  for (let step = 1; step <= 3; step++) {
    const rng = deriveRng(2, `tests/webgpu/${step}`);
    out.push(
      await trainStep(model, {
        x0: rng.normal(size),
        noise: rng.normal(size),
        steps: Int32Array.from({ length: n }, () => rng.int(50)),
        shape: [8, 8, 3],
      }, { schedule, loss: { kind: "l1" }, optimizer }),
    );
  }
  optimizer.dispose();
  model.dispose();
  return out;
}

Deno.test({
  name: `webgpu trains like wasm (${adapter ?? "no adapter: skipped"})`,
  ignore: adapter === undefined,
  fn: async () => {
    const wasm = await losses("wasm");
    const webgpu = await losses("webgpu");
    for (let i = 0; i < wasm.length; i++) {
      assert.ok(
        Math.abs(webgpu[i] - wasm[i]) <= 1e-4 * (1 + Math.abs(wasm[i])),
        `step ${i + 1}: webgpu ${webgpu[i]}, wasm ${wasm[i]}`,
      );
    }
    await initBackend("wasm");
  },
});
