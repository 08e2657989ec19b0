/**
 * ddpm-lab: train and sample DDPM diffusion models from declarative experiment files.
 *
 * As a program: `deno run -A mod.ts run experiments/quickstart.json` (or `deno task run ...`).
 * As a library: the modules the runner composes, one per experiment section.
 * @module
 */
export { main } from "./src/cli/mod.ts";
export { type LoadedExperiment, loadExperiment } from "./src/config/mod.ts";
export { runExperiment } from "./src/run/runner.ts";
export type { RunOptions, RunResult } from "./src/run/types.ts";
export { RunSession } from "./src/run/session.ts";
export { type Dataset, loadDataset, makeBatch } from "./src/data/mod.ts";
export { makeSchedule, type Schedule } from "./src/diffusion/schedule.ts";
export { qSample } from "./src/diffusion/forward.ts";
export { ddpmRule, ddpmStep, type Denoiser, type StepRule } from "./src/diffusion/ddpm.ts";
export { ddimRule } from "./src/diffusion/ddim.ts";
export { generate, reverseProcess, sampleDdim, sampleDdpm } from "./src/diffusion/generate.ts";
export { countParameters, createModel, type DenoiseModel } from "./src/model/mod.ts";
export { Adam, lossValue, trainModel } from "./src/train/mod.ts";
export { type BackendInfo, initBackend } from "./src/backend/mod.ts";
export {
  attributeDistance,
  compareImageSets,
  evaluateSamples,
  fid,
  judgeAccuracy,
  kid,
  loadFeatureNetwork,
  trainJudge,
} from "./src/eval/mod.ts";
export { type Experiment, ExperimentSchema } from "./schemas/experiment.ts";

if (import.meta.main) {
  const { main } = await import("./src/cli/mod.ts");
  Deno.exit(await main(Deno.args));
}
