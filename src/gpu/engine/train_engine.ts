/**
 * The engine as src/train's {@link TrainEngine}: `trainModel` queues its steps here and reads
 * the losses in bulk; a sync copies the parameters, Adam's moments and the EMA into the tfjs
 * objects (for checkpoints and evaluations).
 * @module
 */
import { importParams } from "../../model/mod.ts";
import type { TrainEngine } from "../../train/engine.ts";
import type { GpuEngine } from "./executor.ts";

/**
 * `engine` behind the {@link TrainEngine} interface. Its step count must follow the loop's: a
 * resumed run sets the optimizer state (its step) before the first step.
 */
export function asTrainEngine(engine: GpuEngine): TrainEngine {
  return {
    step(batch, options) {
      if (options.step !== engine.step + 1) {
        throw new Error(
          `engine: asked for step ${options.step} after step ${engine.step} ` +
            "(restore the optimizer state of a resumed run first)",
        );
      }
      engine.trainStep(batch, { lr: options.lr, dropout: options.dropout });
    },
    async losses() {
      return Array.from(await engine.readLosses());
    },
    async syncTo(state, step) {
      importParams(state.model, await engine.params());
      state.optimizer.importState(await engine.optimizerState());
      const ema = await engine.ema();
      if (state.ema && ema) state.ema.importState({ step, tensors: ema });
    },
  };
}
