/**
 * The engine on a device: the plans of ./plan.ts made real. Everything is created once, when
 * the engine starts (every buffer, pipeline and bind group); a training step then costs the
 * host one `writeBuffer` of its inputs, one compute pass with every dispatch, and one submit,
 * with nothing read back (losses stay in a ring buffer until {@link GpuEngine.readLosses}).
 * @module
 */
import type { LossConfig, OptimizerConfig } from "../../../schemas/experiment.ts";
import type { Schedule } from "../../diffusion/schedule.ts";
import type { NamedArray } from "../../io/safetensors.ts";
import { type ConditionInput, encodedWidth, encodeLabels } from "../../model/conditioning.ts";
import { type LayerGraph, traceUnet } from "../../model/graph.ts";
import type { Unet } from "../../model/unet.ts";
import { deriveRng } from "../../rng.ts";
import { microBatchRanges, type Range, shardRanges } from "../../train/split.ts";
import type { GpuContext } from "../device.ts";
import { qSampleCoefficients } from "../kernels/loss.ts";
import { adamHyper, emaHyper } from "../kernels/optimizer.ts";
import { type CompiledPlan, DeviceCompiler } from "./compile.ts";
import { packFlat, type ParamLayout, unpackFlat } from "./layout.ts";
import { lowerGraph, type Plan, type StateBuffer } from "./plan.ts";

/** How a training engine trains (the experiment's sections). */
export interface TrainingSetup {
  /** Examples per step. */
  batch: number;
  /** The noise schedule (q-sample coefficients). */
  schedule: Schedule;
  /** The loss section. */
  loss: LossConfig;
  /** What the network predicts (default eps). */
  prediction?: "eps" | "x0" | "v";
  /** The optimizer section (Adam, lr schedule, clipping, EMA). */
  optimizer: OptimizerConfig;
  /** Optimizer steps of the whole run (where the cosine decay ends). */
  totalSteps: number;
  /** Loss ring entries: call {@link GpuEngine.readLosses} at least this often (default 256). */
  ring?: number;
}

/** Options of {@link GpuEngine.create}. */
export interface EngineOptions {
  /** The device (src/gpu/device.ts `openGpu`). */
  gpu: GpuContext;
  /** The network (src/model `Unet`). */
  net: Unet;
  /** Image side and channels. */
  image: { size: number; channels: number };
  /** Training; absent: a sampling-only engine (no gradients, no optimizer state). */
  training?: TrainingSetup;
  /** Examples per {@link GpuEngine.predict} call at most (default: the training batch, else 1). */
  sampleBatch?: number;
}

/** One training step's examples, as src/train/step.ts `StepBatch`. */
export interface EngineBatch {
  /** x_0, NHWC in [-1, 1]. */
  x0: Float32Array;
  /** ε, same shape. */
  noise: Float32Array;
  /** 0-based t of each example. */
  steps: Int32Array;
  /** A conditional model's labels and dropped examples. */
  condition?: ConditionInput;
}

/** Per-step options of {@link GpuEngine.trainStep}. */
export interface StepOptions {
  /** This step's learning rate (absent: src/train/lr.ts `learningRate` of the step). */
  lr?: number;
  /**
   * The dropout masks' generators, needed when the network has dropout: as the tfjs step
   * (src/train/step.ts), each piece [from, to) of the batch that tfjs runs as one forward pass
   * (its micro-batches, within its workers' shards: {@link dropoutPieces}) draws its rows of
   * every mask, in trace order, from `deriveRng(seed, "<stream>/from-<from>")`. Default: one
   * piece, the whole batch.
   */
  dropout?: { seed: number; stream: string; pieces?: readonly Range[] };
}

function trace(
  options: Pick<EngineOptions, "net" | "image">,
  batch: number,
  training: boolean,
): LayerGraph {
  const { size, channels } = options.image;
  return traceUnet(options.net, { batch, size, channels, training });
}

/** The training plan of `options.training` for batches of `batch`. */
function trainingPlan(
  options: Pick<EngineOptions, "net" | "image" | "training">,
  batch: number,
): Plan {
  const training = options.training!;
  return lowerGraph(trace(options, batch, true), {
    objective: {
      loss: training.loss,
      prediction: training.prediction,
      clip: training.optimizer.clipGradNorm !== undefined,
      ema: training.optimizer.ema !== undefined,
      ring: training.ring ?? 256,
    },
  });
}

/**
 * The pieces of a batch of `n` that the tfjs step runs as one forward pass each: the
 * micro-batches of at most `microBatch` examples within each of the `1 + workers` shards
 * (src/train/split.ts), as absolute example ranges. Their dropout masks come from one
 * generator each ({@link StepOptions.dropout}).
 */
export function dropoutPieces(
  n: number,
  options: { microBatch?: number; workers?: number } = {},
): Range[] {
  return shardRanges(n, 1 + (options.workers ?? 0)).flatMap(([a, b]) =>
    microBatchRanges(b - a, options.microBatch ?? b - a).map(([f, t]) => [a + f, a + t] as const)
  );
}

/** Adam's state as src/train/optimizer.ts `Adam.exportState` gives it. */
export interface OptimizerState {
  /** Updates applied. */
  step: number;
  /** `<name>.exp_avg`, `<name>.exp_avg_sq`. */
  tensors: Map<string, NamedArray>;
}

/**
 * A U-Net compiled for one device. Create it with {@link GpuEngine.create}; give it weights with
 * {@link GpuEngine.setParams} (a fresh engine's parameters are zero).
 */
export class GpuEngine {
  /** Dispatches of one training step (0 for a sampling engine). */
  readonly dispatchCount: number;
  /** Dispatches of one {@link GpuEngine.predict}. */
  readonly predictDispatchCount: number;
  /**
   * Host milliseconds of the last {@link GpuEngine.trainStep}: writing the inputs (masks drawn,
   * one writeBuffer), encoding the pass, submitting.
   */
  lastStepHostMs: { fill: number; encode: number; submit: number } = {
    fill: 0,
    encode: 0,
    submit: 0,
  };
  /** The flat parameter layout. */
  readonly layout: ParamLayout;

  readonly #device: GPUDevice;
  readonly #net: Unet;
  readonly #image: { size: number; channels: number };
  readonly #training?: TrainingSetup;
  readonly #compiler: DeviceCompiler;
  readonly #state: Partial<Record<StateBuffer, GPUBuffer>>;
  /** Training plans by batch size (the first: the configured batch). */
  readonly #trainPlans = new Map<number, CompiledPlan>();
  readonly #train?: CompiledPlan;
  readonly #sample: CompiledPlan;
  #sampleEma?: CompiledPlan;
  readonly #sampleStaging: GPUBuffer;
  readonly #ringStaging?: GPUBuffer;
  readonly #imageFloats: number;
  #step = 0;
  #emaSet = false;
  #pendingLosses = 0;
  #error: GPUError | undefined;
  #destroyed = false;

  private constructor(parts: {
    options: EngineOptions;
    compiler: DeviceCompiler;
    train?: CompiledPlan;
    sample: CompiledPlan;
    sampleStaging: GPUBuffer;
    ringStaging?: GPUBuffer;
  }) {
    const { options, compiler } = parts;
    this.#device = compiler.device;
    this.#net = options.net;
    this.#image = options.image;
    this.#training = options.training;
    this.#compiler = compiler;
    this.#state = compiler.state;
    this.#train = parts.train;
    if (parts.train) this.#trainPlans.set(parts.train.plan.batch, parts.train);
    this.#sample = parts.sample;
    this.#sampleStaging = parts.sampleStaging;
    this.#ringStaging = parts.ringStaging;
    this.#imageFloats = options.image.size ** 2 * options.image.channels;
    this.layout = parts.sample.plan.params;
    this.dispatchCount = parts.train?.commands.length ?? 0;
    this.predictDispatchCount = parts.sample.commands.length;
    this.#device.addEventListener("uncapturederror", (e) => {
      this.#error ??= (e as GPUUncapturedErrorEvent).error;
    });
  }

  /** Bytes of every device buffer the engine made (state, inputs, values, staging). */
  get peakBytes(): number {
    return this.#compiler.bytes;
  }

  /**
   * Traces and lowers the network, creates every buffer, pipeline and bind group, and checks
   * the device accepted them (validation and out-of-memory errors throw here).
   */
  static async create(options: EngineOptions): Promise<GpuEngine> {
    const { gpu, training } = options;
    const device = gpu.device;
    const sampleBatch = options.sampleBatch ?? training?.batch ?? 1;
    const samplePlan = lowerGraph(trace(options, sampleBatch, false));
    const trainPlan = training ? trainingPlan(options, training.batch) : undefined;
    const layout = samplePlan.params;
    const maxBinding = gpu.limits.maxStorageBufferBindingSize;
    if (layout.floats * 4 > maxBinding) {
      throw new Error(
        `engine: the parameters (${layout.floats * 4} bytes) pass ` +
          `maxStorageBufferBindingSize ${maxBinding}`,
      );
    }
    device.pushErrorScope("out-of-memory");
    device.pushErrorScope("validation");
    const compiler = new DeviceCompiler(device, {});
    const state = compiler.state;
    state.params = compiler.buffer(layout.floats, "params");
    if (trainPlan) {
      state.grads = compiler.buffer(layout.floats, "grads");
      state.m = compiler.buffer(layout.floats, "adam.m");
      state.v = compiler.buffer(layout.floats, "adam.v");
      if (training!.optimizer.ema) state.ema = compiler.buffer(layout.floats, "ema");
      state.ring = compiler.buffer(trainPlan.ring, "loss ring");
    }
    const read = GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST;
    const train = trainPlan ? compiler.compile(trainPlan, "train") : undefined;
    const sample = compiler.compile(samplePlan, "sample", { reuse: train?.slots });
    const sampleStaging = compiler.buffer(samplePlan.outputFloats, "sample output", read);
    const ringStaging = trainPlan
      ? compiler.buffer(trainPlan.ring, "ring staging", read)
      : undefined;
    const validation = await device.popErrorScope();
    const oom = await device.popErrorScope();
    const error = validation ?? oom;
    if (error) throw new Error(`engine: the device refused the plan: ${error.message}`);
    return new GpuEngine({ options, compiler, train, sample, sampleStaging, ringStaging });
  }

  /** Optimizer steps applied. */
  get step(): number {
    return this.#step;
  }

  /** Pipelines' dispatches of a step by kernel name (for the bench and the report). */
  dispatchesByKernel(): Map<string, number> {
    const out = new Map<string, number>();
    for (const d of this.#train?.plan.dispatches ?? []) {
      out.set(d.spec.name, (out.get(d.spec.name) ?? 0) + 1);
    }
    return out;
  }

  /**
   * One training step: writes the batch (q-sample coefficients, float t, encoded labels,
   * dropout masks, the step's Adam and EMA scalars) with one `writeBuffer`, encodes every
   * dispatch in one compute pass and submits once. Returns at once; the loss goes to the ring
   * ({@link GpuEngine.readLosses}).
   */
  trainStep(batch: EngineBatch, options: StepOptions = {}): void {
    const t0 = performance.now();
    const setup = this.#training;
    if (!setup) throw new Error("engine: a sampling engine cannot train");
    this.#alive();
    const n = batch.steps.length;
    const c = this.#trainPlan(n);
    const plan = c.plan;
    const f = plan.input.fields;
    const host = c.host;
    if (batch.x0.length !== f.x0!.length || batch.noise.length !== f.noise!.length) {
      throw new RangeError(
        `engine: x0 and noise of ${n} examples need ${f.x0!.length} values, got ` +
          `${batch.x0.length} and ${batch.noise.length}`,
      );
    }
    host.set(batch.x0, f.x0!.offset);
    host.set(batch.noise, f.noise!.offset);
    host.set(qSampleCoefficients(setup.schedule, batch.steps), f.coef!.offset);
    for (let i = 0; i < n; i++) host[f.t!.offset + i] = batch.steps[i];
    this.#writeCondition(c, batch.condition, n);
    if (plan.input.masks.length > 0) {
      const d = options.dropout;
      if (!d) throw new Error("engine: the network has dropout: pass options.dropout");
      for (const [from, to] of d.pieces ?? [[0, n]]) {
        const rng = deriveRng(d.seed, `${d.stream}/from-${from}`);
        for (const m of plan.input.masks) {
          const threshold = Math.floor(m.rate * 0x100000000);
          const keep = 1 / (1 - m.rate);
          const per = m.length / n;
          for (let i = m.offset + from * per; i < m.offset + to * per; i++) {
            host[i] = rng.nextUint32() >= threshold ? keep : 0;
          }
        }
      }
    }
    const step = this.#step + 1;
    c.hostU32[f.slot!.offset] = (step - 1) % plan.ring;
    const opt = setup.optimizer;
    host.set(
      adamHyper(step, { ...opt, totalSteps: setup.totalSteps }, { lr: options.lr }),
      f.adam!.offset,
    );
    if (opt.ema) host.set(emaHyper(step, opt.ema), f.ema!.offset);
    this.#device.queue.writeBuffer(c.input, 0, host);
    const t1 = performance.now();
    const commands = this.#encode(c).finish();
    const t2 = performance.now();
    this.#device.queue.submit([commands]);
    this.#step = step;
    this.#pendingLosses++;
    this.lastStepHostMs = { fill: t1 - t0, encode: t2 - t1, submit: performance.now() - t2 };
  }

  /**
   * Encodes the training step's pass `times` times without submitting it and returns the
   * host milliseconds of one encode (the bench's measure of the per-step host cost).
   */
  measureEncode(times = 10): number {
    const c = this.#train;
    if (!c) throw new Error("engine: a sampling engine has no training step");
    const t0 = performance.now();
    for (let i = 0; i < times; i++) this.#encode(c).finish();
    return (performance.now() - t0) / times;
  }

  /**
   * The losses of the steps since the last call, in step order (maps the ring buffer: call it
   * at `logEvery`, at least every `ring` steps). Throws a device error of the steps, if any.
   */
  async readLosses(): Promise<Float32Array> {
    const c = this.#train;
    if (!c || !this.#ringStaging) throw new Error("engine: a sampling engine has no losses");
    const ring = c.plan.ring;
    if (this.#pendingLosses > ring) {
      throw new Error(
        `engine: ${this.#pendingLosses} steps since the last readLosses, the ring holds ${ring}`,
      );
    }
    const all = await this.#read(this.#state.ring!, ring, this.#ringStaging);
    const out = new Float32Array(this.#pendingLosses);
    for (let i = 0; i < out.length; i++) {
      const step = this.#step - this.#pendingLosses + i + 1;
      out[i] = all[(step - 1) % ring];
    }
    this.#pendingLosses = 0;
    return out;
  }

  /**
   * The network output for x_t [n, H, W, C] at float timesteps `t` (one per example, or one
   * for all), through the sampling plan (in pieces of the sample batch), with the parameters
   * or (`options.weights: "ema"`) the EMA. A conditional network without `condition` gets the
   * null embedding for every example.
   */
  async predict(
    x: Float32Array,
    t: number | ArrayLike<number>,
    options: { condition?: ConditionInput; weights?: "params" | "ema" } = {},
  ): Promise<Float32Array> {
    this.#alive();
    const c = options.weights === "ema" ? this.#emaSample() : this.#sample;
    const size = this.#imageFloats;
    const n = x.length / size;
    if (!Number.isInteger(n) || n < 1) {
      throw new RangeError(`engine: predict takes whole images of ${size} values`);
    }
    const out = new Float32Array(x.length);
    const per = this.#sample.plan.batch;
    const cond = options.condition;
    const attributes = this.#net.condition?.sizes.length ?? 0;
    for (let from = 0; from < n; from += per) {
      const to = Math.min(n, from + per);
      const part = await this.#predictChunk(
        c,
        x.subarray(from * size, to * size),
        typeof t === "number" ? t : Array.from({ length: to - from }, (_, i) => t[from + i]),
        cond
          ? {
            labels: cond.labels.subarray(from * attributes, to * attributes),
            ...(cond.drop ? { drop: cond.drop.subarray(from, to) } : {}),
          }
          : undefined,
      );
      out.set(part, from * size);
    }
    return out;
  }

  /** The sampling plan bound to the EMA weights (made on first use). */
  #emaSample(): CompiledPlan {
    const ema = this.#state.ema;
    if (!ema) throw new Error("engine: no EMA (optimizer.ema is off)");
    this.#sampleEma ??= this.#compiler.compile(this.#sample.plan, "sample ema", {
      reuse: this.#sample.slots,
      params: ema,
    });
    return this.#sampleEma;
  }

  async #predictChunk(
    c: CompiledPlan,
    x: Float32Array,
    t: number | number[],
    condition: ConditionInput | undefined,
  ): Promise<Float32Array> {
    const size = this.#imageFloats;
    const n = x.length / size;
    const f = c.plan.input.fields;
    c.host.fill(0);
    c.host.set(x, f.x!.offset);
    for (let i = 0; i < n; i++) c.host[f.t!.offset + i] = typeof t === "number" ? t : t[i];
    this.#writeCondition(c, condition, n);
    this.#device.queue.writeBuffer(c.input, 0, c.host);
    const encoder = this.#encode(c);
    const bytes = n * size * 4;
    const staging = this.#sampleStaging;
    encoder.copyBufferToBuffer(c.output.buffer, c.output.offset, staging, 0, bytes);
    this.#device.queue.submit([encoder.finish()]);
    await staging.mapAsync(GPUMapMode.READ, 0, bytes);
    const out = new Float32Array(staging.getMappedRange(0, bytes).slice(0));
    staging.unmap();
    this.#throwError();
    return out;
  }

  /** The parameters by state-dict name (this library's layout, as checkpoints hold them). */
  async params(): Promise<Map<string, NamedArray>> {
    return unpackFlat(this.layout, await this.#readState("params"));
  }

  /**
   * Sets every parameter (all must be present with their shapes). The first call on an engine
   * with an EMA also starts the average as a copy (as src/train/ema.ts's constructor does).
   */
  setParams(arrays: Map<string, NamedArray>): void {
    const flat = packFlat(this.layout, arrays, { what: "the parameters" });
    this.#device.queue.writeBuffer(this.#state.params!, 0, flat);
    if (this.#state.ema && !this.#emaSet) {
      this.#device.queue.writeBuffer(this.#state.ema, 0, flat);
      this.#emaSet = true;
    }
  }

  /** The EMA weights by name; undefined without `optimizer.ema`. */
  async ema(): Promise<Map<string, NamedArray> | undefined> {
    if (!this.#state.ema) return undefined;
    return unpackFlat(this.layout, await this.#readState("ema"));
  }

  /** Sets the EMA weights (a resumed run's `ema.safetensors`). */
  setEma(arrays: Map<string, NamedArray>): void {
    if (!this.#state.ema) throw new Error("engine: no EMA (optimizer.ema is off)");
    this.#device.queue.writeBuffer(
      this.#state.ema,
      0,
      packFlat(this.layout, arrays, { what: "the EMA" }),
    );
    this.#emaSet = true;
  }

  /** The gradients of the last step by name (what Adam read; for tests and debugging). */
  async gradients(): Promise<Map<string, NamedArray>> {
    return unpackFlat(this.layout, await this.#readState("grads"));
  }

  /** Adam's moments and step, named as src/train/optimizer.ts `Adam.exportState`. */
  async optimizerState(): Promise<OptimizerState> {
    const m = unpackFlat(this.layout, await this.#readState("m"), { suffix: ".exp_avg" });
    const v = unpackFlat(this.layout, await this.#readState("v"), { suffix: ".exp_avg_sq" });
    const tensors = new Map<string, NamedArray>();
    for (const slot of this.layout.slots) {
      tensors.set(`${slot.name}.exp_avg`, m.get(`${slot.name}.exp_avg`)!);
      tensors.set(`${slot.name}.exp_avg_sq`, v.get(`${slot.name}.exp_avg_sq`)!);
    }
    return { step: this.#step, tensors };
  }

  /** Restores Adam's moments and step (a checkpoint's `optimizer.safetensors`). */
  setOptimizerState(state: OptimizerState): void {
    if (!this.#state.m || !this.#state.v) {
      throw new Error("engine: a sampling engine has no optimizer");
    }
    const q = this.#device.queue;
    q.writeBuffer(
      this.#state.m,
      0,
      packFlat(this.layout, state.tensors, { suffix: ".exp_avg", what: "the optimizer state" }),
    );
    q.writeBuffer(
      this.#state.v,
      0,
      packFlat(this.layout, state.tensors, { suffix: ".exp_avg_sq", what: "the optimizer state" }),
    );
    this.#step = state.step;
    this.#pendingLosses = 0;
  }

  /** Frees every buffer (pipelines and bind groups go with the engine). */
  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    for (const b of this.#compiler.buffers) b.destroy();
  }

  /** {@link GpuEngine.destroy} for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    this.destroy();
    return Promise.resolve();
  }

  /** The training plan for batches of `n` (other sizes than the configured one: made now). */
  #trainPlan(n: number): CompiledPlan {
    let c = this.#trainPlans.get(n);
    if (c) return c;
    if (!(Number.isInteger(n) && n > 0)) throw new RangeError(`engine: a batch of ${n}`);
    const plan = trainingPlan(
      { net: this.#net, image: this.#image, training: this.#training },
      n,
    );
    c = this.#compiler.compile(plan, `train ${n}`, { reuse: this.#train?.slots });
    this.#trainPlans.set(n, c);
    return c;
  }

  #alive(): void {
    if (this.#destroyed) throw new Error("engine: destroyed");
  }

  #writeCondition(c: CompiledPlan, condition: ConditionInput | undefined, n: number): void {
    const f = c.plan.input.fields;
    const shape = this.#net.condition;
    if (!shape) {
      if (condition) throw new Error("engine: labels given to an unconditional network");
      return;
    }
    const width = encodedWidth(shape);
    const rows = c.plan.batch;
    c.host.fill(0, f.labels!.offset, f.labels!.offset + rows * width);
    if (condition) {
      if (condition.labels.length !== n * shape.sizes.length) {
        throw new RangeError(
          `engine: labels for ${
            condition.labels.length / shape.sizes.length
          } examples, batch of ${n}`,
        );
      }
      c.host.set(encodeLabels(condition.labels, shape), f.labels!.offset);
    }
    for (let i = 0; i < rows; i++) {
      c.host[f.drop!.offset + i] = !condition || i >= n ? 1 : condition.drop?.[i] ? 1 : 0;
    }
  }

  #encode(c: CompiledPlan): GPUCommandEncoder {
    const encoder = this.#device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    let last: GPUComputePipeline | undefined;
    for (const cmd of c.commands) {
      if (cmd.pipeline !== last) {
        pass.setPipeline(cmd.pipeline);
        last = cmd.pipeline;
      }
      pass.setBindGroup(0, cmd.bindGroup);
      pass.dispatchWorkgroups(cmd.x, cmd.y, cmd.z);
    }
    pass.end();
    return encoder;
  }

  async #readState(name: StateBuffer): Promise<Float32Array> {
    const buffer = this.#state[name];
    if (!buffer) throw new Error(`engine: no ${name} state`);
    const staging = this.#device.createBuffer({
      size: buffer.size,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    try {
      return await this.#read(buffer, this.layout.floats, staging);
    } finally {
      staging.destroy();
    }
  }

  async #read(buffer: GPUBuffer, floats: number, staging: GPUBuffer): Promise<Float32Array> {
    this.#alive();
    const encoder = this.#device.createCommandEncoder();
    encoder.copyBufferToBuffer(buffer, 0, staging, 0, floats * 4);
    this.#device.queue.submit([encoder.finish()]);
    await staging.mapAsync(GPUMapMode.READ, 0, floats * 4);
    const out = new Float32Array(staging.getMappedRange(0, floats * 4).slice(0));
    staging.unmap();
    this.#throwError();
    return out;
  }

  #throwError(): void {
    const e = this.#error;
    if (e) {
      this.#error = undefined;
      throw new Error(`engine: the device reported an error: ${e.message}`);
    }
  }
}
