/**
 * The engine as a run uses it (`backend: "webgpu"`): opened from the experiment's sections on
 * the adapter `navigator.gpu` offers, with the training plan at `train.batchSize` and the
 * sampling plan at `sampler.batchSize`; its training step behind src/train's `TrainEngine`, its
 * forward pass behind src/diffusion's `Denoiser`, and what the manifest records of it.
 * @module
 */
import type { Experiment } from "../../../schemas/experiment.ts";
import type { Denoiser } from "../../diffusion/ddpm.ts";
import type { Schedule } from "../../diffusion/schedule.ts";
import { UserError } from "../../errors.ts";
import type { ConditionInput, Unet } from "../../model/mod.ts";
import type { TrainEngine } from "../../train/engine.ts";
import { openGpu } from "../device.ts";
import { GpuEngine } from "./executor.ts";
import { asTrainEngine } from "./train_engine.ts";

/** What the manifest records about the engine of a run. */
export interface GpuEngineInfo {
  /** `webgpu`. */
  name: "webgpu";
  /** The adapter (`NVIDIA H200`, `llvmpipe (LLVM 15.0.6, 256 bits)`). */
  adapter: string;
  /** Vendor and architecture as the adapter gives them. */
  vendor: string;
  /** Whether it is a software adapter (llvmpipe): exact, and slow. */
  software: boolean;
  /** Dispatches of one training step (absent for a sampling-only engine). */
  trainDispatches?: number;
  /** Dispatches of one forward pass of the sampling plan. */
  predictDispatches: number;
  /** Bytes of every device buffer the engine made (its peak device memory). */
  peakBytes: number;
}

/** A run's engine: the compiled network, its training step and its denoiser. */
export interface RunEngine {
  /** The compiled network. */
  engine: GpuEngine;
  /** The training step, for `trainModel` (absent when opened for sampling only). */
  train?: TrainEngine;
  /** The network as the samplers see it (`weights`: the EMA or the parameters). */
  denoiser(options?: { condition?: ConditionInput }): Denoiser;
  /** What the manifest records. */
  info(): GpuEngineInfo;
  /** Frees the device buffers. */
  close(): void;
}

/**
 * Opens the engine of `config`'s network `net` on this machine's adapter: for training (with
 * `training`, the run's planned steps) or sampling only. Parameters start at zero: training
 * loads them through `TrainEngine.loadFrom`, sampling through `engine.setParams` /
 * `engine.setEma`. Throws a UserError when there is no adapter.
 */
export async function openRunEngine(
  config: Experiment,
  options: {
    net: Unet;
    schedule: Schedule;
    size: number;
    training?: { totalSteps: number };
  },
): Promise<RunEngine> {
  const gpu = await openGpu();
  if (gpu === undefined) {
    throw new UserError(
      "backend webgpu: no WebGPU adapter is available (navigator.gpu gave none)",
      {
        path: "backend",
        expected: "a machine with a GPU and its Vulkan driver, or 'wasm' / 'auto'",
      },
    );
  }
  const channels = config.model.channels;
  const engine = await GpuEngine.create({
    gpu,
    net: options.net,
    image: { size: options.size, channels },
    ...(options.training
      ? {
        training: {
          batch: config.train.batchSize,
          schedule: options.schedule,
          loss: config.loss,
          prediction: config.model.prediction,
          optimizer: config.optimizer,
          totalSteps: options.training.totalSteps,
          ring: Math.max(256, config.train.logEvery),
        },
      }
      : {}),
    sampleBatch: config.sampler.batchSize,
  });
  // A training engine keeps the average beside the parameters; a sampling-only one holds the
  // weights it samples with (the EMA's, loaded as its parameters) and nothing else.
  const weights = options.training && config.optimizer.ema ? "ema" as const : "params" as const;
  const train = options.training
    ? asTrainEngine(engine, { microBatch: config.train.microBatch, workers: config.train.workers })
    : undefined;
  return {
    engine,
    ...(train ? { train } : {}),
    denoiser: ({ condition } = {}) => async (x, t) =>
      await engine.predict((await x.data()) as Float32Array, await t.data(), {
        ...(condition ? { condition } : {}),
        weights,
      }),
    info: () => ({
      name: "webgpu",
      adapter: gpu.adapter.description || gpu.adapter.device || "unnamed adapter",
      vendor: [gpu.adapter.vendor, gpu.adapter.architecture].filter((v) => v).join(" "),
      software: gpu.adapter.software,
      ...(options.training ? { trainDispatches: engine.dispatchCount } : {}),
      predictDispatches: engine.predictDispatchCount,
      peakBytes: engine.peakBytes,
    }),
    close: () => engine.destroy(),
  };
}
