/**
 * The compiled WebGPU engine's part of `deno task bench --backend webgpu` (src/gpu/engine): what
 * a training step costs the host and the device, beside the PyTorch baseline.
 *
 * - The plan, without a device ({@link planFigures}): dispatches of a training step and of a
 *   forward pass, the device bytes the engine will make (the same buffers, rounded the same way,
 *   as src/gpu/engine/compile.ts), the largest binding (against `maxStorageBufferBindingSize`).
 *   `--plan-only` stops there: the figures of a batch no device here could hold.
 * - On a device ({@link benchEngine}): the engine's creation time (tracing, lowering, every
 *   buffer, pipeline and bind group), its dispatch counts and bytes, and the host milliseconds
 *   to encode a training step (`measureEncode`). On a hardware adapter (or with `--wall`), also
 *   the wall time per training step (`steps` steps, then one `readLosses`, divided by `steps`),
 *   the host milliseconds of filling and submitting each step, and the wall time of one sampling
 *   forward (`predict` of the sampler batch, upload and readback included). On llvmpipe a course
 *   U-Net step takes ~30 s of CPU, so without `--wall` no step is submitted there.
 * @module
 */
import type { LossConfig, OptimizerConfig } from "../schemas/experiment.ts";
import type { Schedule } from "../src/diffusion/schedule.ts";
import { type GpuContext, openGpu } from "../src/gpu/device.ts";
import { GpuEngine, lowerGraph, type Plan } from "../src/gpu/engine/mod.ts";
import { traceUnet } from "../src/model/graph.ts";
import { type DenoiseModel, exportParams } from "../src/model/mod.ts";
import { deriveRng } from "../src/rng.ts";
import { summarise, timeRepeated, type Timing } from "./measure.ts";

/** The shapes and training sections the engine is measured at. */
export interface EngineBenchSetup {
  /** Image side. */
  size: number;
  /** Image channels. */
  channels: number;
  /** Examples per training step. */
  batch: number;
  /** Examples per sampling forward (`predict`). */
  sampleBatch: number;
  /** The noise schedule. */
  schedule: Schedule;
  /** The loss section. */
  loss: LossConfig;
  /** The optimizer section. */
  optimizer: OptimizerConfig;
  /** What the network predicts (the model section's; default eps). */
  prediction?: "eps" | "x0" | "v";
}

/** What the plan says, before any device. */
export interface PlanFigures {
  /** Dispatches of one training step. */
  dispatches: number;
  /** Dispatches of one forward pass of the sampling plan. */
  predictDispatches: number;
  /** Bytes of every device buffer the engine will make (its `peakBytes`). */
  bytes: number;
  /** Bytes of the parameters (one flat buffer; gradients and each Adam moment the same). */
  paramBytes: number;
  /** Buffers of the parameters' size: parameters, gradients, the two moments (and the EMA). */
  stateBuffers: number;
  /** Bytes of the training step's intermediate values (after the memory plan's reuse). */
  valueBytes: number;
  /** The largest buffer range one dispatch binds (must fit `maxStorageBufferBindingSize`). */
  largestBinding: number;
  /** Dispatches of a training step by kernel name, most first. */
  byKernel: Record<string, number>;
}

/** Measured on a device. */
export interface EngineFigures {
  /** The adapter. */
  adapter: { vendor: string; architecture: string; description: string; software: boolean };
  /** Seconds of `GpuEngine.create` (pipelines compiled on this device included). */
  createSeconds: number;
  /** `dispatchCount`. */
  dispatches: number;
  /** `predictDispatchCount`. */
  predictDispatches: number;
  /** `peakBytes`. */
  peakBytes: number;
  /** Host milliseconds to encode one training step (`measureEncode`), over repetitions. */
  encodeMs: Omit<Timing, "raw">;
  /** Whether steps were submitted (a hardware adapter, or `--wall`). */
  wall: boolean;
  /** Per-step host milliseconds of the timed steps (median): fill, encode, submit. */
  stepHostMs?: { fill: number; encode: number; submit: number };
  /** Seconds per training step (each repetition: `steps` steps and one readLosses). */
  train?: Timing;
  /** Seconds per sampling forward (`predict` of `sampleBatch` images). */
  sample?: Timing;
  /** The last losses read (a finite loss says the steps ran). */
  lastLoss?: number;
  /** Dispatches of a training step by kernel name, most first. */
  byKernel: Record<string, number>;
}

/** Bytes of a buffer of `floats` as DeviceCompiler makes it (16-byte multiples, at least 16). */
function bufferBytes(floats: number): number {
  return Math.max(16, Math.ceil(floats * 4 / 16) * 16);
}

function sortedCounts(counts: Map<string, number>): Record<string, number> {
  return Object.fromEntries([...counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)));
}

/**
 * The training and sampling plans of `model` at `setup`'s shapes, lowered as the engine lowers
 * them, and the device bytes the engine would make for them. Pure (no device).
 */
export function planFigures(model: DenoiseModel, setup: EngineBenchSetup): PlanFigures {
  const image = { size: setup.size, channels: setup.channels };
  const train: Plan = lowerGraph(
    traceUnet(model.net, { batch: setup.batch, ...image, training: true }),
    {
      objective: {
        loss: setup.loss,
        prediction: setup.prediction,
        clip: setup.optimizer.clipGradNorm !== undefined,
        ema: setup.optimizer.ema !== undefined,
        ring: 256,
      },
    },
  );
  const sample: Plan = lowerGraph(
    traceUnet(model.net, { batch: setup.sampleBatch, ...image, training: false }),
  );
  const paramBytes = bufferBytes(train.params.floats);
  const states = 4 + (setup.optimizer.ema ? 1 : 0); // params, grads, m, v (, ema)
  const trainSlots = train.memory.slotFloats.map(bufferBytes);
  // The sampling plan's values take the training plan's buffers where they fit, largest first.
  const free = [...trainSlots].sort((a, b) => b - a);
  let sampleNew = 0;
  for (const floats of [...sample.memory.slotFloats].sort((a, b) => b - a)) {
    if (free.length > 0 && free[0] >= floats * 4) free.shift();
    else sampleNew += bufferBytes(floats);
  }
  const valueBytes = trainSlots.reduce((a, b) => a + b, 0);
  const bytes = states * paramBytes + 2 * bufferBytes(train.ring) + valueBytes +
    bufferBytes(train.input.floats) + bufferBytes(sample.input.floats) + sampleNew +
    bufferBytes(sample.outputFloats);
  let largestBinding = 0;
  const counts = new Map<string, number>();
  for (const plan of [train, sample]) {
    for (const d of plan.dispatches) {
      for (const b of d.spec.bindings) largestBinding = Math.max(largestBinding, b.length * 4);
      if (plan === train) counts.set(d.spec.name, (counts.get(d.spec.name) ?? 0) + 1);
    }
  }
  return {
    dispatches: train.dispatches.length,
    predictDispatches: sample.dispatches.length,
    bytes,
    paramBytes,
    stateBuffers: states,
    valueBytes,
    largestBinding,
    byKernel: sortedCounts(counts),
  };
}

/** Median of each of fill / encode / submit over the recorded steps. */
function medianHost(
  steps: { fill: number; encode: number; submit: number }[],
): { fill: number; encode: number; submit: number } {
  const m = (k: "fill" | "encode" | "submit") => summarise(steps.map((s) => s[k])).median;
  return { fill: m("fill"), encode: m("encode"), submit: m("submit") };
}

/**
 * Creates the engine of `model` at `setup`'s shapes on `options.gpu` (default: the adapter
 * `navigator.gpu` offers) and measures it (see the module doc). `steps`: training steps per
 * timed repetition (at most 256, the loss ring); `wall`: submit steps even on a software
 * adapter.
 */
export async function benchEngine(
  model: DenoiseModel,
  setup: EngineBenchSetup,
  options: {
    gpu?: GpuContext;
    warmup: number;
    reps: number;
    steps: number;
    wall?: boolean;
    encodeTimes?: number;
  },
): Promise<EngineFigures> {
  const gpu = options.gpu ?? await openGpu();
  if (gpu === undefined) throw new Error("bench: no WebGPU adapter (navigator.gpu gave none)");
  const wall = options.wall === true || !gpu.adapter.software;
  const created = performance.now();
  const engine = await GpuEngine.create({
    gpu,
    net: model.net,
    image: { size: setup.size, channels: setup.channels },
    training: {
      batch: setup.batch,
      schedule: setup.schedule,
      loss: setup.loss,
      prediction: setup.prediction,
      optimizer: setup.optimizer,
      totalSteps: 100000,
      ring: 256,
    },
    sampleBatch: setup.sampleBatch,
  });
  const createSeconds = (performance.now() - created) / 1000;
  try {
    const encodeTimes = options.encodeTimes ?? 10;
    engine.measureEncode(2); // the first encodes touch every command once
    const encode: number[] = [];
    for (let r = 0; r < Math.max(3, options.reps); r++) {
      encode.push(engine.measureEncode(encodeTimes));
    }
    const { raw: _raw, ...encodeMs } = summarise(encode);
    const out: EngineFigures = {
      adapter: {
        vendor: gpu.adapter.vendor,
        architecture: gpu.adapter.architecture,
        description: gpu.adapter.description || gpu.adapter.device,
        software: gpu.adapter.software,
      },
      createSeconds,
      dispatches: engine.dispatchCount,
      predictDispatches: engine.predictDispatchCount,
      peakBytes: engine.peakBytes,
      encodeMs,
      wall,
      byKernel: sortedCounts(engine.dispatchesByKernel()),
    };
    if (!wall) return out;

    engine.setParams(await exportParams(model));
    const pixels = setup.batch * setup.size ** 2 * setup.channels;
    // Two batches drawn up front, used in turn: the host's draws stay out of the timed steps.
    const batches = [0, 1].map((b) => {
      const rng = deriveRng(0, `bench/engine/${b}`);
      return {
        x0: rng.normal(pixels).map((v) => Math.max(-1, Math.min(1, v))),
        noise: rng.normal(pixels),
        steps: new Int32Array(setup.batch).map(() => rng.int(setup.schedule.timesteps)),
      };
    });
    const steps = Math.min(256, Math.max(1, options.steps));
    const host: { fill: number; encode: number; submit: number }[] = [];
    let k = 0;
    let losses: Float32Array = new Float32Array(0);
    const rep = async (): Promise<void> => {
      for (let i = 0; i < steps; i++) {
        k++;
        engine.trainStep(batches[k % 2], { dropout: { seed: 0, stream: `bench/engine/${k}` } });
        host.push(engine.lastStepHostMs);
      }
      losses = await engine.readLosses();
    };
    const timing = await timeRepeated(rep, { warmup: options.warmup, reps: options.reps });
    const perStep = summarise(timing.raw.map((t) => t / steps));
    out.stepHostMs = medianHost(host.slice(options.warmup * steps));
    out.train = perStep;
    out.lastLoss = losses[losses.length - 1];

    const samplePixels = setup.sampleBatch * setup.size ** 2 * setup.channels;
    const rng = deriveRng(0, "bench/engine/sample");
    const x = rng.normal(samplePixels);
    let index = setup.schedule.timesteps - 1;
    out.sample = await timeRepeated(async () => {
      await engine.predict(x, index);
      index = index === 0 ? setup.schedule.timesteps - 1 : index - 1;
    }, { warmup: options.warmup, reps: options.reps });
    return out;
  } finally {
    engine.destroy();
  }
}

/** The bench's lines for the engine's figures (the table style of bench/mod.ts). */
export function engineLines(plan: PlanFigures | undefined, e: EngineFigures | undefined): string[] {
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(b < 10 * 2 ** 20 ? 1 : 0)} MiB`;
  const ms = (s: number) => `${(s * 1000).toFixed(1)} ms`;
  const lines: string[] = [];
  if (plan) {
    const top = Object.entries(plan.byKernel).slice(0, 6).map(([k, n]) => `${k} ${n}`).join(", ");
    lines.push(
      `engine plan: ${plan.dispatches} dispatches per train step (target <= 800), ` +
        `${plan.predictDispatches} per forward; device memory ${mib(plan.bytes)} ` +
        `(${plan.stateBuffers} x ${mib(plan.paramBytes)} of parameters, gradients and moments; ` +
        `${mib(plan.valueBytes)} of activations); largest binding ${mib(plan.largestBinding)}`,
      `  most dispatched: ${top}`,
    );
  }
  if (e) {
    lines.push(
      `engine on ${e.adapter.description}${e.adapter.software ? " (software)" : ""}: created in ` +
        `${e.createSeconds.toFixed(1)} s; ${e.dispatches} dispatches per train step, ` +
        `${e.predictDispatches} per forward; ${mib(e.peakBytes)} of device buffers`,
      `engine host encode of a train step: median ${e.encodeMs.median.toFixed(2)} ms (min ` +
        `${e.encodeMs.min.toFixed(2)}, max ${e.encodeMs.max.toFixed(2)}, n ${e.encodeMs.n}; ` +
        `target <= 3 ms)`,
    );
    if (e.train && e.stepHostMs) {
      const t = e.train;
      const h = e.stepHostMs;
      lines.push(
        `train step (engine): median ${ms(t.median)} (min ${ms(t.min)}, max ${ms(t.max)}, ` +
          `n ${t.n}); host per step: fill ${h.fill.toFixed(2)} ms, encode ` +
          `${h.encode.toFixed(2)} ms, submit ${h.submit.toFixed(2)} ms; last loss ` +
          `${e.lastLoss?.toFixed(4)}`,
      );
    }
    if (e.sample) {
      const t = e.sample;
      lines.push(
        `sampling forward (engine predict): median ${ms(t.median)} (min ${ms(t.min)}, max ` +
          `${ms(t.max)}, n ${t.n})`,
      );
    }
    if (!e.wall) {
      lines.push(
        "  (software adapter: no step submitted, encode only; --wall submits them anyway)",
      );
    }
  }
  return lines;
}
