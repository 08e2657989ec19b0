/**
 * The compiled WebGPU engine of the U-Net family: the network of src/model traced into its
 * layer graph (src/model/graph.ts) and lowered into a static plan of the kernels of
 * ../kernels, run with every buffer, pipeline and bind group made once.
 *
 * ```ts
 * const gpu = await openGpu();                       // src/gpu/device.ts
 * await using engine = await GpuEngine.create({
 *   gpu, net: model.net, image: { size: 32, channels: 3 },
 *   training: { batch: 32, schedule, loss, prediction, optimizer, totalSteps, ring: 256 },
 *   sampleBatch: 64,
 * });
 * engine.setParams(await exportParams(model));       // (and setOptimizerState / setEma to resume)
 * for (const step of ...) {
 *   engine.trainStep({ x0, noise, steps, condition }, { lr, dropout: { seed, stream } });
 *   if (step % logEvery === 0) losses = await engine.readLosses();
 * }
 * const eps = await engine.predict(xt, t, { condition, weights: "ema" });
 * saveCheckpoint(...)  with engine.params(), engine.optimizerState(), engine.ema()
 * ```
 *
 * - {@link GpuEngine.create}: traces the training graph (batch `training.batch`) and the
 *   sampling graph (batch `sampleBatch`), lowers them (./plan.ts), creates everything and
 *   throws if the device refuses any of it. Parameters start at zero: call `setParams`.
 * - `trainStep(batch, { lr, dropout })`: one optimizer step, returns at once (nothing is read
 *   back). The batch is src/train/step.ts's `StepBatch` (x0, noise, 0-based integer steps, the
 *   conditional model's labels and drop mask); the host computes the q-sample coefficients,
 *   encodes the labels and draws the dropout masks in trace order, one generator
 *   `deriveRng(seed, "<stream>/from-<i>")` per piece the tfjs step runs as one pass
 *   (`dropout.pieces`, `dropoutPieces`; default the whole batch), exactly as the tfjs step,
 *   then writes them with one `writeBuffer`, encodes every dispatch in one compute pass and
 *   submits once. `lr` defaults to src/train/lr.ts's
 *   schedule for the engine's step; clipping and the EMA follow `training.optimizer`. A batch
 *   of another size (the last one with `dropLast: false`) gets its own plan on first use.
 * - `readLosses()`: the losses of the steps since the last call (at `logEvery`; at most
 *   `ring` steps apart). It also surfaces any device error of those steps.
 * - `predict(x, t, { condition, weights })`: the network output through the sampling plan, in
 *   pieces of `sampleBatch`; `weights: "ema"` uses the average. A conditional network without
 *   labels gets the null embedding (drop = 1), as guidance's unconditional branch needs.
 * - State by state-dict name, in the layout of src/io/safetensors checkpoints (conv HWIO,
 *   linear [in, out]), so checkpoints move between this engine and tfjs / ONNX Runtime:
 *   `params()` / `setParams(map)` (the first `setParams` also starts the EMA as a copy, as
 *   src/train/ema.ts does), `ema()` / `setEma(map)`, `optimizerState()` /
 *   `setOptimizerState({ step, tensors })` (names `<param>.exp_avg`, `.exp_avg_sq`, as
 *   src/train/optimizer.ts `Adam.exportState`), `gradients()` (the last step's, for tests).
 * - `dispatchCount` (one training step), `predictDispatchCount`, `peakBytes` (every device
 *   buffer the engine made), `lastStepHostMs` (fill / encode / submit of the last step),
 *   `measureEncode(times)` (host ms of encoding a step without submitting it),
 *   `dispatchesByKernel()`, `destroy()` / `[Symbol.asyncDispose]`.
 *
 * - `asTrainEngine(engine, { microBatch, workers })`: the engine as src/train's
 *   `TrainEngine` (`trainModel`'s `engine` option): steps queued, losses read in bulk, state
 *   synced into the tfjs model, Adam and EMA at epoch ends; the dropout masks those of a tfjs
 *   run with that micro-batch and worker count (one generator per piece, `dropoutPieces`).
 *   The engine itself always runs the whole batch in one pass.
 *
 * The tfjs step it reproduces is src/train/step.ts without micro-batches or workers (those
 * change the order of the gradient sums, not the function). Equal within 1e-4 at the test
 * sizes (tests/gpu/engine_train_test.ts); the same bytes for the same inputs on one device.
 * @module
 */
export {
  dropoutPieces,
  type EngineBatch,
  type EngineOptions,
  GpuEngine,
  type OptimizerState,
  type StepOptions,
  type TrainingSetup,
} from "./executor.ts";
export { asTrainEngine } from "./train_engine.ts";
export { lowerGraph, type LowerOptions, type Plan, type TrainingObjective } from "./plan.ts";
export { type ParamLayout, paramLayout } from "./layout.ts";
export { type GpuEngineInfo, openRunEngine, type RunEngine } from "./run_engine.ts";
