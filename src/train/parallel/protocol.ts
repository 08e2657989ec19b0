/**
 * What a training step hands to a gradient computation, and the messages between
 * `GradientWorkers` (src/train/parallel/mod.ts) and its workers (src/train/parallel/worker.ts).
 * Everything is plain data, sent by structured clone; large arrays are transferred.
 * @module
 */
import type { LossConfig, ModelConfig } from "../../../schemas/experiment.ts";
import type { BackendName } from "../../backend/mod.ts";
import type { Schedule } from "../../diffusion/schedule.ts";
import type { ConditionInput } from "../../model/mod.ts";

/**
 * What a forward/backward pass needs besides the model and its examples. Plain data (structured
 * cloneable): gradient workers receive it with each batch.
 */
export interface GradientTask {
  /** Noise schedule. */
  schedule: Schedule;
  /** Loss section. */
  loss: LossConfig;
  /** What the network predicts (`model.prediction`; default eps). */
  prediction?: ModelConfig["prediction"];
  /**
   * Dropout masks: drawn from `deriveRng(seed, "<stream>/from-<i>")`, i being the index in the
   * step's batch of the piece's first example (absent: no dropout).
   */
  dropout?: { seed: number; stream: string };
}

/** Training examples: clean images, their noise and their 0-based steps. */
export interface StepBatch {
  /** x_0, NHWC float32 in [-1, 1]. */
  x0: Float32Array;
  /** ε, same shape as x0. */
  noise: Float32Array;
  /** t index of each example. */
  steps: Int32Array;
  /** [H, W, C] of one example. */
  shape: [number, number, number];
  /** Index of the first example in the step's whole batch (default 0). */
  offset?: number;
  /** A conditional model's labels [n, A] and dropped examples. */
  condition?: ConditionInput;
}

/** Starts the worker's backend and builds its copy of the network. */
export interface InitRequest {
  /** Message kind. */
  kind: "init";
  /** Backend to start in the worker. */
  backend: BackendName;
  /** The model section. */
  model: ModelConfig;
  /** A conditional model's attribute sizes. */
  labelSizes?: number[];
}

/** The weights, packed in parameter order; absent when the worker has them already. */
export interface WeightsUpdate {
  /** All parameters, concatenated in state-dict order. */
  weights?: Float32Array;
}

/** Computes the loss and gradients of a shard of a batch. */
export interface GradientsRequest extends WeightsUpdate {
  /** Message kind. */
  kind: "gradients";
  /** The shard's examples. */
  batch: StepBatch;
  /** Schedule and loss. */
  task: GradientTask;
  /** Examples in the whole step's batch (each loss is weighted by its share). */
  total: number;
  /** At most this many examples per forward/backward pass. */
  microBatch?: number;
}

/** Runs the network forward (sampling). */
export interface PredictRequest extends WeightsUpdate {
  /** Message kind. */
  kind: "predict";
  /** x_t, NHWC. */
  x: Float32Array;
  /** Float timesteps, one per example. */
  t: Float32Array;
  /** [H, W, C] of one example. */
  shape: [number, number, number];
  /** A conditional model's labels. */
  condition?: ConditionInput;
}

/** A request to a worker. */
export type WorkerRequest = InitRequest | GradientsRequest | PredictRequest;

/** A worker's answer, in request order. */
export type WorkerReply =
  | { kind: "ready"; names: string[]; sizes: number[]; backend: string; threads?: number }
  | { kind: "gradients"; loss: number; grads: Float32Array }
  | { kind: "predict"; y: Float32Array }
  | { kind: "error"; message: string };
