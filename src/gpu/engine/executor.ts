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
import { traceUnet } from "../../model/graph.ts";
import type { Unet } from "../../model/unet.ts";
import { deriveRng } from "../../rng.ts";
import type { GpuContext } from "../device.ts";
import type { Binding } from "../kernel.ts";
import { qSampleCoefficients } from "../kernels/loss.ts";
import { adamHyper, emaHyper } from "../kernels/optimizer.ts";
import { packFlat, type ParamLayout, unpackFlat } from "./layout.ts";
import { lowerGraph, type Plan, type Ref, type StateBuffer } from "./plan.ts";

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
   * Dropout masks drawn from `deriveRng(seed, "<stream>/from-0")` in trace order, as the tfjs
   * step draws them (src/train/step.ts); needed when the network has dropout.
   */
  dropout?: { seed: number; stream: string };
}

/** Adam's state as src/train/optimizer.ts `Adam.exportState` gives it. */
export interface OptimizerState {
  /** Updates applied. */
  step: number;
  /** `<name>.exp_avg`, `<name>.exp_avg_sq`. */
  tensors: Map<string, NamedArray>;
}

/** One dispatch, ready to encode. */
interface Command {
  pipeline: GPUComputePipeline;
  bindGroup: GPUBindGroup;
  x: number;
  y: number;
  z: number;
}

/** A plan on the device. */
interface CompiledPlan {
  plan: Plan;
  input: GPUBuffer;
  host: Float32Array<ArrayBuffer>;
  hostU32: Uint32Array<ArrayBuffer>;
  slots: GPUBuffer[];
  commands: Command[];
  output: { buffer: GPUBuffer; offset: number };
  staging?: GPUBuffer;
}

const STORAGE = () => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

/**
 * A U-Net compiled for one device. Create it with {@link GpuEngine.create}; give it weights with
 * {@link GpuEngine.setParams} (a fresh engine's parameters are zero).
 */
export class GpuEngine {
  /** Dispatches of one training step (0 for a sampling engine). */
  readonly dispatchCount: number;
  /** Dispatches of one {@link GpuEngine.predict}. */
  readonly predictDispatchCount: number;
  /** Bytes of every device buffer the engine made. */
  readonly peakBytes: number;
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
  readonly #training?: TrainingSetup;
  readonly #state: Partial<Record<StateBuffer, GPUBuffer>>;
  readonly #train?: CompiledPlan;
  readonly #sample: CompiledPlan;
  readonly #ringStaging?: GPUBuffer;
  readonly #imageFloats: number;
  #step = 0;
  #emaSet = false;
  #pendingLosses = 0;
  #error: GPUError | undefined;
  #destroyed = false;

  private constructor(parts: {
    device: GPUDevice;
    net: Unet;
    training?: TrainingSetup;
    state: Partial<Record<StateBuffer, GPUBuffer>>;
    train?: CompiledPlan;
    sample: CompiledPlan;
    ringStaging?: GPUBuffer;
    imageFloats: number;
    bytes: number;
  }) {
    this.#device = parts.device;
    this.#net = parts.net;
    this.#training = parts.training;
    this.#state = parts.state;
    this.#train = parts.train;
    this.#sample = parts.sample;
    this.#ringStaging = parts.ringStaging;
    this.#imageFloats = parts.imageFloats;
    this.layout = parts.sample.plan.params;
    this.dispatchCount = parts.train?.commands.length ?? 0;
    this.predictDispatchCount = parts.sample.commands.length;
    this.peakBytes = parts.bytes;
    parts.device.addEventListener("uncapturederror", (e) => {
      this.#error ??= (e as GPUUncapturedErrorEvent).error;
    });
  }

  /**
   * Traces and lowers the network, creates every buffer, pipeline and bind group, and checks
   * the device accepted them (validation and out-of-memory errors throw here).
   */
  static async create(options: EngineOptions): Promise<GpuEngine> {
    const { gpu, net, image, training } = options;
    const device = gpu.device;
    const sampleBatch = options.sampleBatch ?? training?.batch ?? 1;
    const trace = (batch: number, isTraining: boolean) =>
      traceUnet(net, { batch, size: image.size, channels: image.channels, training: isTraining });
    const samplePlan = lowerGraph(trace(sampleBatch, false));
    const trainPlan = training
      ? lowerGraph(trace(training.batch, true), {
        objective: {
          loss: training.loss,
          prediction: training.prediction,
          clip: training.optimizer.clipGradNorm !== undefined,
          ema: training.optimizer.ema !== undefined,
          ring: training.ring ?? 256,
        },
      })
      : undefined;
    const layout = samplePlan.params;
    const maxBinding = gpu.limits.maxStorageBufferBindingSize;
    if (layout.floats * 4 > maxBinding) {
      throw new Error(
        `the parameters (${
          layout.floats * 4
        } bytes) pass maxStorageBufferBindingSize ${maxBinding}`,
      );
    }
    device.pushErrorScope("out-of-memory");
    device.pushErrorScope("validation");
    let bytes = 0;
    const buffer = (floats: number, label: string, usage = STORAGE()) => {
      const size = Math.max(16, Math.ceil(floats * 4 / 16) * 16);
      bytes += size;
      return device.createBuffer({ size, usage, label });
    };
    const state: Partial<Record<StateBuffer, GPUBuffer>> = {
      params: buffer(layout.floats, "params"),
    };
    if (trainPlan) {
      state.grads = buffer(layout.floats, "grads");
      state.m = buffer(layout.floats, "adam.m");
      state.v = buffer(layout.floats, "adam.v");
      if (training!.optimizer.ema) state.ema = buffer(layout.floats, "ema");
      state.ring = buffer(trainPlan.ring, "loss ring");
    }
    const pipelines = new Map<string, GPUComputePipeline>();
    const layouts = new Map<string, GPUBindGroupLayout>();
    const compile = (plan: Plan, name: string, reuse: GPUBuffer[] = []): CompiledPlan => {
      const input = buffer(plan.input.floats, `${name} input`);
      // A plan's values live within one submit, so another plan's buffers can hold them: the
      // largest value buffers take the largest free buffers of `reuse` that fit.
      const free = [...reuse].sort((a, b) => b.size - a.size);
      const slots: GPUBuffer[] = [];
      const order = plan.memory.slotFloats.map((_, i) => i);
      order.sort((a, b) => plan.memory.slotFloats[b] - plan.memory.slotFloats[a]);
      for (const i of order) {
        const need = plan.memory.slotFloats[i] * 4;
        const k = free.length > 0 && free[0].size >= need ? 0 : -1;
        slots[i] = k === 0
          ? free.shift()!
          : buffer(plan.memory.slotFloats[i], `${name} value ${i}`);
      }
      const resolve = (ref: Ref, b: Binding): GPUBufferBinding => {
        if ("value" in ref) {
          return { buffer: slots[plan.memory.slotOf[ref.value]], offset: 0, size: b.length * 4 };
        }
        const target = ref.state === "input" ? input : state[ref.state];
        if (!target) throw new Error(`engine: no ${ref.state} buffer`);
        return { buffer: target, offset: ref.offset * 4, size: b.length * 4 };
      };
      const commands = plan.dispatches.map((d): Command => {
        const signature = d.spec.bindings.map((b) => b.access === "read" ? "r" : "w").join("");
        let bgl = layouts.get(signature);
        if (!bgl) {
          bgl = device.createBindGroupLayout({
            entries: d.spec.bindings.map((b, i) => ({
              binding: i,
              visibility: GPUShaderStage.COMPUTE,
              buffer: { type: b.access === "read" ? "read-only-storage" : "storage" },
            })),
          });
          layouts.set(signature, bgl);
        }
        const key = `${signature}\n${d.spec.code}`;
        let pipeline = pipelines.get(key);
        if (!pipeline) {
          pipeline = device.createComputePipeline({
            label: d.spec.name,
            layout: device.createPipelineLayout({ bindGroupLayouts: [bgl] }),
            compute: {
              module: device.createShaderModule({ code: d.spec.code, label: d.spec.name }),
              entryPoint: "main",
            },
          });
          pipelines.set(key, pipeline);
        }
        const bindGroup = device.createBindGroup({
          layout: bgl,
          entries: d.refs.map((r, i) => ({ binding: i, resource: resolve(r, d.spec.bindings[i]) })),
        });
        const [x, y, z] = d.spec.workgroups;
        return { pipeline, bindGroup, x, y, z };
      });
      const out = plan.output;
      const outBinding = resolve(out, { name: "out", access: "read", length: plan.outputFloats });
      const host = new Float32Array(plan.input.floats);
      return {
        plan,
        input,
        host,
        hostU32: new Uint32Array(host.buffer),
        slots,
        commands,
        output: { buffer: outBinding.buffer, offset: outBinding.offset ?? 0 },
      };
    };
    const train = trainPlan ? compile(trainPlan, "train") : undefined;
    const sample = compile(samplePlan, "sample", train?.slots);
    sample.staging = buffer(
      samplePlan.outputFloats,
      "sample output",
      GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    );
    const ringStaging = trainPlan
      ? buffer(trainPlan.ring, "ring staging", GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST)
      : undefined;
    const validation = await device.popErrorScope();
    const oom = await device.popErrorScope();
    const error = validation ?? oom;
    if (error) throw new Error(`engine: the device refused the plan: ${error.message}`);
    return new GpuEngine({
      device,
      net,
      training,
      state,
      train,
      sample,
      ringStaging,
      imageFloats: image.size * image.size * image.channels,
      bytes,
    });
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
    const c = this.#train;
    const setup = this.#training;
    if (!c || !setup) throw new Error("engine: a sampling engine cannot train");
    this.#alive();
    const plan = c.plan;
    const n = batch.steps.length;
    if (n !== plan.batch) {
      throw new RangeError(`engine: compiled for batches of ${plan.batch}, got ${n}`);
    }
    const f = plan.input.fields;
    const host = c.host;
    host.set(batch.x0, f.x0!.offset);
    host.set(batch.noise, f.noise!.offset);
    host.set(qSampleCoefficients(setup.schedule, batch.steps), f.coef!.offset);
    for (let i = 0; i < n; i++) host[f.t!.offset + i] = batch.steps[i];
    this.#writeCondition(c, batch.condition, n);
    if (plan.input.masks.length > 0) {
      if (!options.dropout) {
        throw new Error("engine: the network has dropout: pass options.dropout");
      }
      const rng = deriveRng(options.dropout.seed, `${options.dropout.stream}/from-0`);
      for (const m of plan.input.masks) {
        const threshold = Math.floor(m.rate * 0x100000000);
        const keep = 1 / (1 - m.rate);
        for (let i = 0; i < m.length; i++) {
          host[m.offset + i] = rng.nextUint32() >= threshold ? keep : 0;
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
   * The network output for x_t [n, H, W, C] (n at most the sample batch) at float timesteps
   * `t` (one per example, or one for all), through the sampling plan with the weights of
   * `options.weights` (default the parameters; `"ema"`: the average). A conditional network
   * without `condition` gets the null embedding for every example.
   */
  async predict(
    x: Float32Array,
    t: number | ArrayLike<number>,
    options: { condition?: ConditionInput } = {},
  ): Promise<Float32Array> {
    this.#alive();
    const c = this.#sample;
    const size = this.#imageFloats;
    const n = x.length / size;
    if (!Number.isInteger(n) || n < 1 || n > c.plan.batch) {
      throw new RangeError(
        `engine: predict takes 1 to ${c.plan.batch} images, got ${x.length / size}`,
      );
    }
    const f = c.plan.input.fields;
    c.host.fill(0);
    c.host.set(x, f.x!.offset);
    for (let i = 0; i < c.plan.batch; i++) {
      c.host[f.t!.offset + i] = typeof t === "number" ? t : i < n ? t[i] : 0;
    }
    this.#writeCondition(c, options.condition, n);
    this.#device.queue.writeBuffer(c.input, 0, c.host);
    const encoder = this.#encode(c);
    encoder.copyBufferToBuffer(c.output.buffer, c.output.offset, c.staging!, 0, n * size * 4);
    this.#device.queue.submit([encoder.finish()]);
    await c.staging!.mapAsync(GPUMapMode.READ, 0, n * size * 4);
    const out = new Float32Array(c.staging!.getMappedRange(0, n * size * 4).slice(0));
    c.staging!.unmap();
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
    for (const b of Object.values(this.#state)) b?.destroy();
    for (const c of [this.#train, this.#sample]) {
      if (!c) continue;
      c.input.destroy();
      c.slots.forEach((s) => s.destroy()); // a buffer shared by both plans: destroyed twice, harmless
      c.staging?.destroy();
    }
    this.#ringStaging?.destroy();
  }

  /** {@link GpuEngine.destroy} for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    this.destroy();
    return Promise.resolve();
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
