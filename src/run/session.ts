/**
 * One way to open a run: {@linkcode RunSession} brings up what training, sampling and
 * evaluating a configured (or trained) model need, in this order: the backend, the schedule, the
 * dataset, the conditioning resolved against its labels, the model, the optimizer, the weight
 * average, a checkpoint, the gradient workers, and (once there are trained weights) the sampling
 * engine. `run`, `sample`, `eval`, `judge` and the dry-run estimate open one each, and
 * `await using` frees it all together:
 *
 * ```ts
 * await using session = await RunSession.open(loaded, { purpose: "sample", checkpoint });
 * const engine = await session.startSampling(checkpoint);
 * ```
 *
 * What computes is chosen in one place, {@linkcode chooseEngine}, from `backend.engine`.
 * @module
 */
import type { Experiment } from "../../schemas/experiment.ts";
import { type BackendInfo, initBackend } from "../backend/mod.ts";
import type { LoadedExperiment } from "../config/mod.ts";
import { plural } from "../config/summary.ts";
import { type Dataset, loadDataset } from "../data/mod.ts";
import type { Denoiser } from "../diffusion/ddpm.ts";
import { makeSchedule, type Schedule } from "../diffusion/schedule.ts";
import { RunFailure, UserError } from "../errors.ts";
import { openRunEngine } from "../gpu/mod.ts";
import {
  type ConditionInput,
  createModel,
  type DenoiseModel,
  exportParams,
  withParams,
} from "../model/mod.ts";
import { createSamplingEngine, type SamplingEngine } from "../onnx/mod.ts";
import { deriveRng } from "../rng.ts";
import { tf } from "../tf.ts";
import { type CheckpointState, loadCheckpoint } from "../train/checkpoint.ts";
import { Adam, Ema, plannedSteps, type TrainEngine } from "../train/mod.ts";
import { GradientWorkers } from "../train/parallel/mod.ts";
import { resolveConditioning, type ResolvedConditioning } from "./conditions.ts";

/**
 * What a session is opened for: `train` (an optimizer, and the gradient workers of
 * `train.workers`), `sample` (the trained network only; no workers when ONNX Runtime samples, it
 * does not use them) or `data` (the backend, the dataset and its conditioning; no network).
 */
export type SessionPurpose = "train" | "sample" | "data";

/** Options of {@linkcode RunSession.open}. */
export interface OpenOptions {
  /** What the session is for (see {@linkcode SessionPurpose}). */
  purpose: SessionPurpose;
  /**
   * The experiment file a relative dataset path (and a message) is relative to: default the
   * loaded file; a run folder's config.json passes its experiment's (`manifest.source.file`).
   */
  experimentFile?: string;
  /**
   * The training images: `load` them (the default), load them only when the model is
   * conditional (`labels`: its label sizes and what to sample come from them), `none` (the
   * estimate, which times random data of the configured shape), or a dataset already loaded.
   */
  dataset?: "load" | "labels" | "none" | Dataset;
  /** Folder of the avatar cache (default `<project>/.cache/avatars`). */
  cacheDir?: string;
  /** Told how many images are decoded or rendered. */
  onDataProgress?: (done: number, total: number) => void;
  /** A checkpoint folder whose weights (and EMA, and with `train` Adam's moments) are loaded. */
  checkpoint?: string;
  /** Start the gradient workers now (default); false: {@linkcode RunSession.startWorkers} later. */
  workers?: boolean;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

/**
 * What computes the network, chosen by {@linkcode chooseEngine}: the training steps and the
 * samplers' network.
 */
export interface NetworkEngine {
  /**
   * A compiled engine that runs whole optimizer steps (`trainModel`'s `engine`); absent: the
   * tfjs step, on this thread or sharded over the gradient workers.
   */
  train?: TrainEngine;
  /** The samplers' network; a conditional one without `condition` uses its null embedding. */
  denoiser(condition?: ConditionInput): Denoiser;
  /** Frees what the engine holds (nothing for tfjs). */
  dispose?(): void | Promise<void>;
  /** What the manifest records of the engine (`backend.gpu`): adapter, dispatches, memory. */
  info?(): Record<string, unknown>;
}

/** The network and its training state (absent for `data`). */
interface Network {
  model: DenoiseModel;
  optimizer: Adam | null;
  ema: Ema | null;
  /** The network as the samplers see it: the EMA weights when the experiment keeps them. */
  net: DenoiseModel;
}

/** A run opened: see the module documentation. */
export class RunSession implements AsyncDisposable {
  /** The resolved experiment. */
  readonly config: Experiment;
  /** The tfjs backend that runs, and what trains and samples (`backend.engine`). */
  readonly backend: BackendInfo;
  /** The noise schedule. */
  readonly schedule: Schedule;
  /** The training images, unless opened without them (see {@linkcode OpenOptions.dataset}). */
  readonly dataset: Dataset | undefined;
  /** A conditional model's attributes, label sizes and label plan (undefined otherwise). */
  readonly conditioning: ResolvedConditioning | undefined;
  #checkpoint: CheckpointState | null = null;
  #purpose: SessionPurpose;
  #network: Network | undefined;
  #engine: NetworkEngine | undefined;
  #workers: GradientWorkers | undefined;
  #sampling: SamplingEngine | undefined;
  #log: (line: string) => void;

  private constructor(parts: {
    config: Experiment;
    backend: BackendInfo;
    dataset: Dataset | undefined;
    conditioning: ResolvedConditioning | undefined;
    purpose: SessionPurpose;
    log: (line: string) => void;
  }) {
    this.config = parts.config;
    this.backend = parts.backend;
    this.schedule = makeSchedule(parts.config.schedule);
    this.dataset = parts.dataset;
    this.conditioning = parts.conditioning;
    this.#purpose = parts.purpose;
    this.#log = parts.log;
  }

  /**
   * Opens `loaded`: everything that can fail on bad input (the backend, a dataset, a label
   * name, workers that cannot start) fails here, before a caller writes anything.
   */
  static async open(loaded: LoadedExperiment, options: OpenOptions): Promise<RunSession> {
    const { config } = loaded;
    const log = options.log ?? (() => {});
    const file = options.experimentFile ?? loaded.file;
    const backend = await initBackend(config.backend);
    const wanted = options.dataset ?? "load";
    let dataset: Dataset | undefined;
    if (typeof wanted === "object") dataset = wanted;
    else if (wanted === "load" || (wanted === "labels" && config.model.conditioning)) {
      log(`loading dataset (${config.dataset.kind})...`);
      dataset = await loadDataset(config.dataset, {
        transform: config.transform,
        seed: config.seed,
        cacheDir: options.cacheDir,
        experimentFile: file,
        onProgress: options.onDataProgress,
      });
      log(`  ${dataset.source}`);
    }
    // A conditional model: its attributes in the dataset, and what to sample (bad names fail here).
    const conditioning = resolveConditioning(config, { labels: dataset?.labels, file });
    const session = new RunSession({
      config,
      backend,
      dataset,
      conditioning,
      purpose: options.purpose,
      log,
    });
    if (options.purpose === "data") return session;
    try {
      const network = session.#createNetwork(options.purpose);
      session.#network = network;
      if (options.checkpoint) await session.loadCheckpoint(options.checkpoint);
      // What computes: chosen once the weights (and a checkpoint given here) are in place.
      session.#engine = await chooseEngine(backend, {
        config,
        schedule: session.schedule,
        purpose: options.purpose,
        dataset,
        size: session.size,
        labelSizes: session.labelSizes,
        ...network,
        workers: () => session.#workers,
      });
      if (options.workers ?? true) await session.startWorkers();
      return session;
    } catch (err) {
      await session[Symbol.asyncDispose]();
      throw err;
    }
  }

  /** The model, its optimizer (training) and its weight average. */
  #createNetwork(purpose: "train" | "sample"): Network {
    const { config } = this;
    const model = createModel(config.model, {
      rng: deriveRng(config.seed, "model/init"),
      labelSizes: this.labelSizes,
    });
    const optimizer = purpose === "train" ? new Adam(model.params, config.optimizer) : null;
    const ema = config.optimizer.ema ? new Ema(model.params, config.optimizer.ema) : null;
    // The samplers and evaluations see the weight average when the experiment keeps one.
    const net = ema ? withParams(model, ema.params) : model;
    return { model, optimizer, ema, net };
  }

  #need(): Network {
    if (!this.#network) throw new Error("this run session was opened without its network (data)");
    return this.#network;
  }

  /** A conditional model's number of values per conditioned attribute. */
  get labelSizes(): number[] | undefined {
    return this.conditioning?.labelSizes;
  }

  /** Image side: the dataset's, or the transform's when opened without it. */
  get size(): number {
    return this.dataset?.size ?? this.config.transform.size;
  }

  /** The network being trained (its own weights). */
  get model(): DenoiseModel {
    return this.#need().model;
  }

  /** Adam and its moments (sessions opened to `train`). */
  get optimizer(): Adam {
    const { optimizer } = this.#need();
    if (!optimizer) throw new Error("this run session was opened to sample: it has no optimizer");
    return optimizer;
  }

  /** The weight average, when the experiment keeps one. */
  get ema(): Ema | null {
    return this.#need().ema;
  }

  /** The network as the samplers see it: the EMA weights when the experiment keeps them. */
  get net(): DenoiseModel {
    return this.#need().net;
  }

  /** Which weights sample: `ema` or `model`. */
  get weights(): "ema" | "model" {
    return this.ema ? "ema" : "model";
  }

  /** The parameters of the network. */
  get parameters(): number {
    return this.model.net.parameterCount;
  }

  /** The step and epoch of the checkpoint loaded last, if any. */
  get checkpoint(): CheckpointState | null {
    return this.#checkpoint;
  }

  /** The gradient workers, while they run. */
  get workers(): GradientWorkers | undefined {
    return this.#workers;
  }

  /** The engine that runs the training steps instead of tfjs, if any (`trainModel`'s `engine`). */
  get trainEngine(): TrainEngine | undefined {
    this.#need();
    return this.#engine?.train;
  }

  /** What the manifest records of the network engine (absent for tfjs). */
  get engineInfo(): Record<string, unknown> | undefined {
    return this.#engine?.info?.();
  }

  /** The sampling engine, once {@linkcode startSampling} started it. */
  get sampling(): SamplingEngine | undefined {
    return this.#sampling;
  }

  /**
   * The samplers' network on the session's engine (through the gradient workers while they
   * run); a conditional one given `condition`, or without it its null embedding.
   */
  denoiser(condition?: ConditionInput): Denoiser {
    this.#need();
    return this.#engine!.denoiser(condition);
  }

  /** Loads the checkpoint in `dir` into the model, the EMA and (training) the optimizer. */
  async loadCheckpoint(dir: string): Promise<CheckpointState> {
    const { model, optimizer, ema } = this.#need();
    this.#checkpoint = await loadCheckpoint(dir, {
      model,
      ema,
      ...(optimizer ? { optimizer } : {}),
    });
    return this.#checkpoint;
  }

  /**
   * Starts the gradient workers of `train.workers` on the backends that run them (none
   * elsewhere, and none for sampling on ONNX Runtime). Throws a {@linkcode RunFailure} saying how
   * to run without them when they cannot start.
   */
  async startWorkers(): Promise<void> {
    this.#need();
    if (this.#workers) return;
    if (this.#purpose === "sample" && this.config.sampler.engine === "onnxruntime") return;
    // The WebGPU engine runs whole steps and forward passes itself: tfjs workers would idle.
    if (this.backend.engine === "webgpu") return;
    this.#workers = await startWorkers(this.config, {
      backend: this.backend,
      labelSizes: this.labelSizes,
    });
  }

  /**
   * The engine `sampler.engine` names, on the trained weights in `checkpointDir` (ONNX Runtime
   * exports them; should it fail to load, tfjs samples). Before ONNX Runtime loads, the gradient
   * workers stop (it does not use them: their memory is freed).
   */
  async startSampling(checkpointDir: string): Promise<SamplingEngine> {
    this.#need();
    if (this.config.sampler.engine === "onnxruntime") {
      this.#workers?.close();
      this.#workers = undefined;
    }
    await this.#sampling?.close();
    this.#sampling = await createSamplingEngine(this.config, {
      tfjs: (condition) => this.denoiser(condition),
      // Under backend webgpu the "tfjs" engine (the run's own network) is the WebGPU engine.
      tfjsBackend: this.backend.engine === "webgpu" ? "the WebGPU engine" : this.backend.name,
      checkpointDir,
      size: this.size,
      ...(this.labelSizes ? { labelSizes: this.labelSizes } : {}),
      log: this.#log,
    });
    return this.#sampling;
  }

  /** Frees the sampling engine, the workers, the network engine, the model, Adam and the EMA. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.#sampling?.close();
    this.#sampling = undefined;
    this.#workers?.close();
    this.#workers = undefined;
    await this.#engine?.dispose?.();
    this.#engine = undefined;
    const network = this.#network;
    this.#network = undefined;
    if (!network) return;
    network.model.dispose();
    network.optimizer?.dispose();
    network.ema?.dispose();
  }
}

/**
 * THE ENGINE CHOICE: what runs the training steps and the samplers' network, from
 * `backend.engine`. A new engine adds its case here (its {@linkcode TrainEngine} for
 * `trainModel`, its denoiser for the samplers, what to free). It is called once per session,
 * after the checkpoint given to {@linkcode RunSession.open} is loaded into `model` and `ema`
 * (a resumed run's checkpoint is loaded later, before `trainModel`, which hands it to the
 * engine with `TrainEngine.loadFrom`).
 *
 * - `tfjs`: tfjs's own training step (no `train` engine: `trainModel` runs `trainStep`, sharded
 *   over the gradient workers when there are some) and the tfjs network, on this thread or
 *   sharded over the workers while they run.
 * - `webgpu`: the compiled engine of src/gpu ({@linkcode webgpuEngine}) trains and samples; tfjs
 *   (on `backend.name`) holds the copy of the state that checkpoints and evaluations read.
 */
export function chooseEngine(
  backend: BackendInfo,
  parts: EngineParts,
): Promise<NetworkEngine> {
  switch (backend.engine) {
    case "tfjs":
      return Promise.resolve({
        denoiser: (condition) =>
          samplingDenoiser(parts.net, { workers: parts.workers(), condition }),
      });
    case "webgpu":
      return webgpuEngine(parts);
  }
}

/**
 * The compiled WebGPU engine (src/gpu): a training plan when the session trains, a sampling
 * plan always. Training hands it the tfjs state first (`TrainEngine.loadFrom`) and copies its
 * state back at epoch ends; a denoiser loads the tfjs weights into it before its first call
 * (after training they are the engine's own, synced; for a reused training or a checkpoint
 * they are what was loaded), so the engine samples exactly what a checkpoint holds.
 */
async function webgpuEngine(parts: EngineParts): Promise<NetworkEngine> {
  const { config, model, ema } = parts;
  const training = parts.purpose === "train" && parts.dataset
    ? { totalSteps: plannedSteps(parts.dataset.count, config.train).total }
    : undefined;
  if (training && !config.train.dropLast) {
    throw new UserError("backend webgpu trains batches of one size only", {
      path: "train.dropLast",
      expected: "true (the default) with backend webgpu",
    });
  }
  const gpu = await openRunEngine(config, {
    net: model.net,
    schedule: parts.schedule,
    size: parts.size,
    ...(training ? { training } : {}),
  });
  const load = async () => {
    if (!gpu.train) return gpu.engine.setParams(await exportParams(parts.net));
    gpu.engine.setParams(await exportParams(model));
    if (ema) gpu.engine.setEma((await ema.exportState()).tensors);
  };
  return {
    ...(gpu.train ? { train: gpu.train } : {}),
    denoiser: (condition) => {
      const denoise = gpu.denoiser({ condition });
      let loaded: Promise<void> | undefined;
      return async (x, t) => {
        loaded ??= load();
        await loaded;
        return await denoise(x, t);
      };
    },
    dispose: () => gpu.close(),
    info: () => ({ ...gpu.info() }),
  };
}

/** What an engine is built from (see {@linkcode chooseEngine}). */
export interface EngineParts {
  /** The resolved experiment (model, loss, optimizer, train and sampler sections). */
  config: Experiment;
  /** The noise schedule. */
  schedule: Schedule;
  /** What the session is for: an engine need not train when it only samples. */
  purpose: Exclude<SessionPurpose, "data">;
  /** The training images (their count gives the planned steps), unless opened without them. */
  dataset: Dataset | undefined;
  /** Image side. */
  size: number;
  /** A conditional model's number of values per conditioned attribute. */
  labelSizes?: number[];
  /** The network trained (its parameters are the tfjs copy a checkpoint saves). */
  model: DenoiseModel;
  /** Adam and its moments (training only). */
  optimizer: Adam | null;
  /** The weight average, when the experiment keeps one. */
  ema: Ema | null;
  /** The network the samplers see (the EMA weights when kept). */
  net: DenoiseModel;
  /** The gradient workers running when called (they start late and may stop early). */
  workers: () => GradientWorkers | undefined;
}

/**
 * The tfjs network as the samplers see it: on this thread, or sharded over the gradient
 * workers.
 */
export function samplingDenoiser(
  net: DenoiseModel,
  options: { workers: GradientWorkers | undefined; condition?: ConditionInput },
): Denoiser {
  const { workers, condition } = options;
  if (workers) return (x, t) => workers.predictSharded(net, { x, t, condition });
  return (x, t) => tf.tidy(() => net.predict(x, t, { condition }));
}

/**
 * The gradient workers `train.workers` asks for, on the backends that run them (none elsewhere).
 * Throws a {@linkcode RunFailure} saying how to run without them when they cannot start.
 */
async function startWorkers(
  config: Experiment,
  options: { backend: BackendInfo; labelSizes?: number[] },
): Promise<GradientWorkers | undefined> {
  const { backend, labelSizes } = options;
  const count = config.train.workers;
  if (count === 0 || (backend.name !== "wasm" && backend.name !== "cpu")) {
    return undefined;
  }
  try {
    return await GradientWorkers.start({
      count,
      model: config.model,
      backend: backend.name,
      ...(labelSizes ? { labelSizes } : {}),
    });
  } catch (err) {
    const why = err instanceof Error ? err.message.split("\n")[0] : String(err);
    throw new RunFailure(
      `the ${plural(count, "gradient worker")} of train.workers could not start on ` +
        `${backend.name}: ${why}`,
      {
        kept: "nothing: they start before the run folder is written",
        todo: [
          "run on this thread alone with --set train.workers=0 (a different config: its bytes " +
          "differ from a run with workers), or free memory for the workers' wasm instances",
        ],
        cause: err,
      },
    );
  }
}
