/**
 * The engine as src/train's {@link TrainEngine}: `trainModel` queues its steps here and reads
 * the losses in bulk; a sync copies the parameters, Adam's moments and the EMA into the tfjs
 * objects (for checkpoints and evaluations).
 * @module
 */
import { exportParams, importParams } from "../../model/mod.ts";
import type { TrainEngine } from "../../train/engine.ts";
import { dropoutPieces, type GpuEngine } from "./executor.ts";

/**
 * `engine` behind the {@link TrainEngine} interface. Its step count must follow the loop's: a
 * resumed run sets the optimizer state (its step) before the first step. The dropout masks are
 * those of a tfjs run with `options.microBatch` and `options.workers` (src/train/step.ts:
 * one generator per micro-batch of each shard), so the engine repeats that run's draws.
 */
export function asTrainEngine(
  engine: GpuEngine,
  options: { microBatch?: number; workers?: number } = {},
): TrainEngine {
  return {
    step(batch, step) {
      if (step.step !== engine.step + 1) {
        throw new Error(
          `engine: asked for step ${step.step} after step ${engine.step} ` +
            "(restore the optimizer state of a resumed run first)",
        );
      }
      const n = batch.steps.length;
      const dropout = step.dropout
        ? { ...step.dropout, pieces: dropoutPieces(n, options) }
        : undefined;
      engine.trainStep(batch, { lr: step.lr, dropout });
    },
    async losses() {
      return Array.from(await engine.readLosses());
    },
    async loadFrom(state) {
      engine.setParams(await exportParams(state.model));
      engine.setOptimizerState(await state.optimizer.exportState());
      if (state.ema) engine.setEma((await state.ema.exportState()).tensors);
    },
    async syncTo(state, step) {
      importParams(state.model, await engine.params());
      state.optimizer.importState(await engine.optimizerState());
      const ema = await engine.ema();
      if (state.ema && ema) state.ema.importState({ step, tensors: ema });
    },
  };
}
