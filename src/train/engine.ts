/**
 * A compiled training engine (the WebGPU engine of src/gpu): it holds its own copy of the
 * parameters, gradients, Adam moments and EMA, and runs whole optimizer steps without reading
 * anything back. The training loop gives it the same host-side draws as the tfjs step (batch,
 * t, noise, labels, label dropout, dropout masks' stream) and reads the losses in bulk; before a
 * checkpoint or an evaluation it copies the engine's state into the tfjs objects, so checkpoints
 * are the same safetensors whichever engine trained.
 * @module
 */
import type { DenoiseModel } from "../model/mod.ts";
import type { Ema } from "./ema.ts";
import type { Adam } from "./optimizer.ts";
import type { StepBatch } from "./parallel/protocol.ts";

/** What one queued step needs besides its batch. */
export interface EngineStep {
  /** 1-based optimizer step. */
  step: number;
  /** This step's learning rate (absent: the configured one). */
  lr?: number;
  /** The dropout masks' generator stream of this step (`train/dropout/step-<k>`), when dropout is on. */
  dropout?: { seed: number; stream: string };
}

/** The tfjs objects a sync fills (see {@link TrainEngine.syncTo}). */
export interface TrainState {
  /** The network (its parameters are assigned). */
  model: DenoiseModel;
  /** The optimizer (its moments and step are assigned). */
  optimizer: Adam;
  /** The weight average, when the experiment keeps one. */
  ema: Ema | null;
}

/** A training engine that owns the state while it trains. */
export interface TrainEngine {
  /** Queues one optimizer step (update, clipping and EMA included) on `batch`. */
  step(batch: StepBatch, options: EngineStep): void | Promise<void>;
  /** The losses of the steps queued since the last call, in step order. */
  losses(): Promise<number[]>;
  /** Copies the engine's parameters, moments and EMA into `state` after step `step`. */
  syncTo(state: TrainState, step: number): Promise<void>;
  /**
   * Takes the parameters, moments and EMA of `state` (a fresh model, or a resumed run's
   * checkpoint as loaded into it): `trainModel` calls it before the first step.
   */
  loadFrom(state: TrainState): Promise<void>;
}
