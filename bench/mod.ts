/**
 * `deno task bench`: times one training step of the course U-Net, one DDPM sampling step per
 * sampling engine (tfjs on the backend, and ONNX Runtime) and the data pipeline, and reports
 * GFLOP/s, peak RSS and the backend. `--only eval` adds the wall time of sampling 1,000 images
 * with DDIM in 50 steps per engine (what an evaluation costs). A tool, not a test.
 *
 * ```sh
 * deno task bench [--backend wasm] [--size 32] [--batch 32] [--reps 10] [--json FILE]
 *                 [--profile] [--only train,sample,onnx,data,ddim,decode,eval] [--ddim-count 1000]
 *                 [--decode-count 12000] [--eval-samples 1000]
 *                 [--model '{"width": 128}']
 * deno task bench --backend webgpu [--engine-steps 10] [--wall] [--plan-only]
 * ```
 *
 * With `--backend webgpu` (or `auto` on a hardware adapter) the train and sample phases measure
 * the compiled WebGPU engine (src/gpu/engine; bench/engine_bench.ts), not tfjs: its plan
 * (dispatches per train step, device memory), its creation time, the host ms to encode a step
 * and, on a hardware adapter (or with `--wall`), the wall time per train step (`--engine-steps`
 * steps, then one loss readback, divided) and per sampling forward (`predict` of `--batch`
 * images), in `train` / `sample` as tfjs' are (so `--torch` and bench/side_by_side.sh compare
 * them), with the rest under `engine`. On a software adapter (llvmpipe) no step is submitted
 * unless `--wall` is given: a course U-Net step takes it ~30 s. `--plan-only` lowers the plans
 * and stops (no device: the figures of a batch the machine could not hold).
 *
 * `eval` (not run by default: minutes) times the feature extraction of the KID/FID network at 299
 * and 128 px and the whole evaluation of `--eval-samples` images (bench/eval_bench.ts).
 *
 * `decode` (not run by default: it writes 12,000 PNGs once) times the first decode of a folder
 * and a zip of 64x64 PNGs into the decoded cache, and a cached start.
 * @module
 */
import { parseArgs } from "node:util";
import { ModelSchema, OptimizerSchema, ScheduleSchema } from "../schemas/experiment.ts";
import { type BackendName, initBackend } from "../src/backend/mod.ts";
import { makeBatch } from "../src/data/mod.ts";
import { benchDecode } from "./decode_bench.ts";
import { generate } from "../src/diffusion/generate.ts";
import { ddpmStep, type Denoiser } from "../src/diffusion/ddpm.ts";
import { makeSchedule } from "../src/diffusion/schedule.ts";
import { countParameters, createModel, exportParams } from "../src/model/mod.ts";
import {
  buildUnetOnnx,
  type ExecutionProvider,
  loadOnnxRuntime,
  openModel,
  ortDenoiser,
  type OrtModel,
} from "../src/onnx/mod.ts";
import { deriveRng } from "../src/rng.ts";
import { tf } from "../src/tf.ts";
import { Adam } from "../src/train/optimizer.ts";
import { GradientWorkers } from "../src/train/parallel/mod.ts";
import { trainStep } from "../src/train/step.ts";
import { benchEngine, engineLines, planFigures } from "./engine_bench.ts";
import { benchEval } from "./eval_bench.ts";
import {
  currentRss,
  megabytes,
  peakRss,
  resetPeakRss,
  summarise,
  timeRepeated,
  type Timing,
} from "./measure.ts";

/** GFLOP of one training step / one forward pass of the course U-Net at 32x32, batch 32. */
const TRAIN_GFLOP_32 = 30;
const FORWARD_GFLOP_32 = 10;
const PHASES = ["train", "sample", "onnx", "data", "ddim", "decode", "eval"] as const;
/** Phases run when --only is not given (ddim and eval take minutes). */
const DEFAULT_PHASES = ["train", "sample", "onnx", "data"];
/** Examples per forward/backward pass: keeps 2 threads at 32x32, batch 32 under 1 GB. */
const DEFAULT_MICRO_BATCH = 8;
type Phase = typeof PHASES[number];

interface Args {
  backend: BackendName;
  size: number;
  batch: number;
  reps: number;
  warmup: number;
  json?: string;
  profile: boolean;
  only: Phase[];
  decodeCount: number;
  workers: number;
  microBatch?: number;
  torch: string[];
  providers?: ExecutionProvider[];
  ortThreads?: number;
  ddimCount: number;
  ddimEngines: string[];
  /** Samples of the whole-eval measurement (`eval` phase). */
  evalSamples: number;
  /** Model fields over the course U-Net's defaults (`--model` JSON), or undefined. */
  model?: Record<string, unknown>;
  /** The WebGPU engine: training steps per timed repetition. */
  engineSteps: number;
  /** The WebGPU engine: submit steps on a software adapter too. */
  wall: boolean;
  /** The WebGPU engine: lower the plans only (no device). */
  planOnly: boolean;
}

function parse(argv: string[]): Args {
  const { values } = parseArgs({
    args: argv,
    options: {
      backend: { type: "string", default: "wasm" },
      size: { type: "string", default: "32" },
      batch: { type: "string", default: "32" },
      reps: { type: "string", default: "10" },
      warmup: { type: "string", default: "2" },
      json: { type: "string" },
      profile: { type: "boolean", default: false },
      only: { type: "string", default: DEFAULT_PHASES.join(",") },
      providers: { type: "string" },
      "ort-threads": { type: "string" },
      "ddim-count": { type: "string", default: "1000" },
      "ddim-engines": { type: "string", default: "tfjs,onnxruntime" },
      "decode-count": { type: "string", default: "12000" },
      workers: { type: "string", default: "auto" },
      "micro-batch": { type: "string", default: String(DEFAULT_MICRO_BATCH) },
      torch: { type: "string", multiple: true, default: [] },
      "eval-samples": { type: "string", default: "1000" },
      model: { type: "string" },
      "engine-steps": { type: "string", default: "10" },
      wall: { type: "boolean", default: false },
      "plan-only": { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(
      "deno task bench [--backend auto|tensorflow|webgpu|wasm|cpu] [--size 32] [--batch 32]\n" +
        "                [--reps 10] [--warmup 2] [--json FILE] [--profile]\n" +
        "                [--only train,sample,onnx,data,ddim,decode,eval] [--decode-count 12000]\n" +
        "                [--eval-samples 1000]\n" +
        "                [--workers N|auto] [--micro-batch M] [--model JSON]\n" +
        "                [--torch baseline.json ...] [--providers cuda,webgpu,cpu] [--ddim-count N]\n" +
        "--only: phases (default train,sample,onnx,data); onnx: the sampling step through ONNX\n" +
        "        Runtime; ddim: wall time of N DDIM-50 samples per engine (minutes)\n" +
        "--ort-threads: ONNX Runtime intra-op threads (default: every core)\n" +
        "--ddim-engines: engines the ddim phase times (default tfjs,onnxruntime)\n" +
        "--providers: ONNX Runtime execution providers to try in order (default: cuda when\n" +
        "             installed, webgpu on a hardware adapter, cpu)\n" +
        "--workers: worker threads besides the main thread sharing each batch (data parallel);\n" +
        "           auto: with wasm one per further core (at most 3), else none\n" +
        `--micro-batch: at most M examples per forward/backward pass (default ${DEFAULT_MICRO_BATCH}, ` +
        "0: the whole shard)\n" +
        '--model: JSON object of model fields over the course U-Net (e.g. \'{"width": 128, ' +
        '"multipliers": [1, 1, 2, 2]}\')\n' +
        "--torch: JSON files of ../shared/reference/torch_unet_baseline.py --json, run beside\n" +
        "         this one (e.g. before and after): prints the time ratios to their mean\n" +
        "--backend webgpu: train and sample measure the compiled WebGPU engine: plan, creation,\n" +
        "         host encode ms; on a hardware adapter also wall ms per train step and forward\n" +
        "--engine-steps N: engine train steps per timed repetition, then one loss readback\n" +
        "         (default 10)\n" +
        "--wall: submit engine steps on a software adapter too (llvmpipe: ~30 s a course step)\n" +
        "--plan-only: the engine's plan only (dispatches, device bytes), no device",
    );
    Deno.exit(0);
  }
  const int = (name: string, v: string, min: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) {
      throw new Error(`--${name}: expected an integer >= ${min}`);
    }
    return n;
  };
  const only = values.only.split(",").map((s) => s.trim()).filter((s) => s !== "");
  for (const p of only) {
    if (!(PHASES as readonly string[]).includes(p)) {
      throw new Error(`--only: unknown phase '${p}' (expected ${PHASES.join(", ")})`);
    }
  }
  return {
    backend: values.backend as BackendName,
    size: int("size", values.size, 4),
    batch: int("batch", values.batch, 1),
    reps: int("reps", values.reps, 1),
    warmup: int("warmup", values.warmup, 0),
    json: values.json,
    profile: values.profile,
    only: only as Phase[],
    decodeCount: int("decode-count", values["decode-count"], 1),
    workers: values.workers === "auto"
      ? (values.backend === "wasm"
        ? Math.max(0, Math.min(3, navigator.hardwareConcurrency - 1))
        : 0)
      : int("workers", values.workers, 0),
    microBatch: int("micro-batch", values["micro-batch"], 0) || undefined,
    torch: values.torch,
    providers: values.providers?.split(",").map((p) => p.trim() as ExecutionProvider),
    ortThreads: values["ort-threads"] === undefined
      ? undefined
      : int("ort-threads", values["ort-threads"], 1),
    ddimCount: int("ddim-count", values["ddim-count"], 1),
    ddimEngines: values["ddim-engines"].split(",").map((e) => e.trim()),
    evalSamples: int("eval-samples", values["eval-samples"], 2),
    model: values.model === undefined ? undefined : parseModel(values.model),
    engineSteps: int("engine-steps", values["engine-steps"], 1),
    wall: values.wall,
    planOnly: values["plan-only"],
  };
}

function parseModel(text: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new Error(`--model: expected a JSON object (${e instanceof Error ? e.message : e})`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Error("--model: expected a JSON object of model fields");
  }
  return value as Record<string, unknown>;
}

/** Kernel milliseconds per call of `fn`, largest first (tf.profile). */
async function profileKernels(fn: () => Promise<unknown>): Promise<Record<string, number>> {
  const info = await tf.profile(async () => {
    await fn();
  });
  const totals = new Map<string, { ms: number; calls: number }>();
  for (const k of info.kernels) {
    const t = totals.get(k.name) ?? { ms: 0, calls: 0 };
    t.ms += typeof k.kernelTimeMs === "number" ? k.kernelTimeMs : 0;
    t.calls++;
    totals.set(k.name, t);
  }
  const out: Record<string, number> = {};
  const sorted = [...totals].sort((a, b) => b[1].ms - a[1].ms);
  for (const [name, t] of sorted) out[`${name} (${t.calls})`] = Math.round(t.ms);
  console.log(`  peak bytes in tf.profile: ${megabytes(info.peakBytes)}`);
  return out;
}

interface TorchBaseline {
  train_step: { median: number };
  sample_step: { median: number };
}

/** Prints and returns our median times over the mean of the PyTorch baselines' medians. */
async function compareWithTorch(
  files: string[],
  result: Record<string, unknown>,
): Promise<Record<string, number>> {
  const baselines: TorchBaseline[] = [];
  for (const file of files) baselines.push(JSON.parse(await Deno.readTextFile(file)));
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const torchTrain = mean(baselines.map((b) => b.train_step.median));
  const torchSample = mean(baselines.map((b) => b.sample_step.median));
  const out: Record<string, number> = { torchTrain, torchSample };
  const ours = (phase: string) => (result[phase] as Timing | undefined)?.median;
  const train = ours("train");
  const sample = ours("sample");
  console.log(
    `PyTorch (mean of ${files.length} run(s)): train step ${(torchTrain * 1000).toFixed(0)} ms, ` +
      `sampling step ${(torchSample * 1000).toFixed(0)} ms`,
  );
  if (train !== undefined) {
    out.trainRatio = train / torchTrain;
    console.log(`  train step ratio ${out.trainRatio.toFixed(2)} (target <= 2)`);
  }
  if (sample !== undefined) {
    out.sampleRatio = sample / torchSample;
    console.log(`  sampling step ratio ${out.sampleRatio.toFixed(2)} (target <= 2)`);
  }
  const onnx = ours("onnx");
  if (onnx !== undefined) {
    out.onnxSampleRatio = onnx / torchSample;
    console.log(
      `  sampling step ratio, onnxruntime ${out.onnxSampleRatio.toFixed(2)} (target <= 0.8)`,
    );
  }
  return out;
}

function line(label: string, t: Timing, gflop?: number): string {
  const ms = (s: number) => `${(s * 1000).toFixed(0)} ms`;
  const rate = gflop === undefined || Number.isNaN(gflop)
    ? ""
    : `, ${(gflop / t.median).toFixed(1)} GFLOP/s`;
  return `${label}: median ${ms(t.median)} (min ${ms(t.min)}, max ${ms(t.max)}, n ${t.n})${rate}`;
}

async function main(): Promise<void> {
  const args = parse(Deno.args);
  // A plan needs no device: --plan-only runs on any machine (tfjs on wasm for the model).
  const info = await initBackend(args.planOnly ? "wasm" : args.backend);
  const onEngine = info.engine === "webgpu" || args.planOnly;
  // The GFLOP figures are the course U-Net's: other models print times only.
  const scale = args.model === undefined ? (args.size / 32) ** 2 * (args.batch / 32) : NaN;
  const cpu = (() => {
    try {
      const text = Deno.readTextFileSync("/proc/cpuinfo");
      return text.match(/^model name\s*:\s*(.*)$/m)?.[1] ?? "unknown";
    } catch {
      return "unknown";
    }
  })();
  console.log(
    `backend ${info.name}${info.threads === undefined ? "" : `, ${info.threads} thread(s)`}` +
      `${info.adapter ? `, adapter ${info.adapter}` : ""}; tfjs ${info.tfjsVersion}; ` +
      `${cpu}, ${navigator.hardwareConcurrency} logical cores`,
  );
  const modelConfig = ModelSchema.parse(args.model ?? {});
  const model = createModel(modelConfig, { rng: deriveRng(0, "model/init") });
  console.log(
    `${args.model === undefined ? "course U-Net" : `U-Net ${JSON.stringify(args.model)}`} ` +
      `(${countParameters(modelConfig).toLocaleString("en-US")} parameters), ` +
      `${args.size}x${args.size}, batch ${args.batch}, warm-up ${args.warmup}, ` +
      `${args.reps} repetitions`,
  );

  // The tfjs workers only serve the tfjs phases (an onnx-only run measures ORT alone).
  const tfjsPhases = (!onEngine && args.only.some((p) => p === "train" || p === "sample")) ||
    (args.only.includes("ddim") && args.ddimEngines.includes("tfjs"));
  const workers = args.workers > 0 && tfjsPhases
    ? await GradientWorkers.start({
      count: args.workers,
      model: modelConfig,
      backend: args.backend,
    })
    : undefined;
  if (tfjsPhases) {
    console.log(
      `tfjs threads computing each batch: ${1 + (workers ? args.workers : 0)} (main + ` +
        `${workers ? args.workers : 0} worker(s))` +
        (args.microBatch ? `, micro-batches of at most ${args.microBatch}` : ""),
    );
  }
  const schedule = makeSchedule(ScheduleSchema.parse({ kind: "linear", timesteps: 200 }));
  const shape: [number, number, number] = [args.size, args.size, 3];
  const pixels = args.batch * args.size * args.size * 3;
  const result: Record<string, unknown> = {
    backend: info,
    cpu,
    cores: navigator.hardwareConcurrency,
    size: args.size,
    batch: args.batch,
    deno: Deno.version.deno,
  };
  const baseRss = currentRss();

  if (onEngine && (args.only.includes("train") || args.only.includes("sample"))) {
    const setup = {
      size: args.size,
      channels: 3,
      batch: args.batch,
      sampleBatch: args.batch,
      schedule,
      loss: { kind: "l1" } as const,
      optimizer: OptimizerSchema.parse({}),
      prediction: modelConfig.prediction,
    };
    const plan = planFigures(model, setup);
    const figures = args.planOnly ? undefined : await benchEngine(model, setup, {
      warmup: args.warmup,
      reps: args.reps,
      steps: args.engineSteps,
      wall: args.wall,
    });
    for (const l of engineLines(plan, figures)) console.log(l);
    const { train, sample, ...rest } = figures ?? {};
    result.engine = { plan, ...rest, steps: args.engineSteps, planOnly: args.planOnly };
    if (train && args.only.includes("train")) {
      const gflop = TRAIN_GFLOP_32 * scale;
      result.train = { ...train, gflop, gflops: gflop / train.median };
    }
    if (sample && args.only.includes("sample")) {
      const gflop = FORWARD_GFLOP_32 * scale;
      result.sample = { ...sample, gflop, gflops: gflop / sample.median };
    }
  }

  if (!onEngine && args.only.includes("train")) {
    const optimizer = new Adam(model.params, OptimizerSchema.parse({}));
    let k = 0;
    const step = async (): Promise<number> => {
      k++;
      const rng = deriveRng(0, `bench/train/${k}`);
      const steps = new Int32Array(args.batch).map(() => rng.int(schedule.timesteps));
      return await trainStep(model, {
        x0: rng.normal(pixels).map((v) => Math.max(-1, Math.min(1, v))),
        noise: rng.normal(pixels),
        steps,
        shape,
      }, { schedule, loss: { kind: "l1" }, optimizer, workers, microBatch: args.microBatch });
    };
    const resetOk = resetPeakRss();
    const timing = await timeRepeated(step, { warmup: args.warmup, reps: args.reps });
    const gflop = TRAIN_GFLOP_32 * scale;
    const peak = peakRss();
    console.log(line("train step", timing, gflop));
    console.log(
      `  peak RSS while training ${megabytes(peak)}${resetOk ? "" : " (process peak)"}; ` +
        `RSS before ${megabytes(baseRss)}; tensors ${tf.memory().numTensors}`,
    );
    result.train = { ...timing, gflop, gflops: gflop / timing.median, peakRss: peak };
    if (args.profile) {
      const kernels = await profileKernels(step);
      console.log("  kernels (ms):", kernels);
      (result.train as Record<string, unknown>).kernels = kernels;
    }
    optimizer.dispose();
  }

  /** One DDPM sampling step at batch `args.batch` through `denoise`, on a running x. */
  const samplingStep = (denoise: Denoiser, stream: string) => {
    const rng = deriveRng(0, stream);
    let x = tf.tensor4d(rng.normal(pixels), [args.batch, ...shape]);
    let index = schedule.timesteps - 1;
    const step = async (): Promise<void> => {
      const i = index;
      index = index === 0 ? schedule.timesteps - 1 : index - 1;
      const z = rng.normal(pixels);
      const t = tf.fill([args.batch], i) as tf.Tensor1D;
      const raw = await denoise(x, t);
      const eps = raw instanceof Float32Array ? tf.tensor4d(raw, x.shape) : raw;
      t.dispose();
      const next = tf.tidy(() =>
        ddpmStep(x, eps, {
          schedule,
          index: i,
          variance: "posterior",
          z: tf.tensor4d(z, [args.batch, ...shape]),
        })
      );
      await next.data();
      eps.dispose();
      x.dispose();
      x = next;
    };
    return { step, dispose: () => x.dispose() };
  };
  const tfjsDenoise: Denoiser = workers === undefined
    ? (x, t) => tf.tidy(() => model.predict(x, t))
    : (x, t) => workers.predictSharded(model, { x, t });

  if (!onEngine && args.only.includes("sample")) {
    const { step, dispose } = samplingStep(tfjsDenoise, "bench/sample");
    const resetOk = resetPeakRss();
    const timing = await timeRepeated(step, { warmup: args.warmup, reps: args.reps });
    const gflop = FORWARD_GFLOP_32 * scale;
    const peak = peakRss();
    console.log(line("sampling step", timing, gflop));
    console.log(`  peak RSS while sampling ${megabytes(peak)}${resetOk ? "" : " (process peak)"}`);
    result.sample = { ...timing, gflop, gflops: gflop / timing.median, peakRss: peak };
    if (args.profile) {
      const kernels = await profileKernels(step);
      console.log("  kernels (ms):", kernels);
      (result.sample as Record<string, unknown>).kernels = kernels;
    }
    dispose();
  }

  let session: OrtModel | undefined;
  if (args.only.includes("onnx") || args.only.includes("ddim")) {
    const ort = await loadOnnxRuntime();
    const exportStart = performance.now();
    const bytes = buildUnetOnnx(modelConfig, await exportParams(model), { size: args.size });
    const exportSeconds = (performance.now() - exportStart) / 1000;
    const openStart = performance.now();
    session = await openModel(ort, bytes, { providers: args.providers, threads: args.ortThreads });
    const openSeconds = (performance.now() - openStart) / 1000;
    console.log(
      `onnxruntime ${ort.env.versions.node} on ${session.provider}, ${session.threads} thread(s): ` +
        `export ${(exportSeconds * 1000).toFixed(0)} ms (${megabytes(bytes.length)}), session ` +
        `${(openSeconds * 1000).toFixed(0)} ms`,
    );
    result.onnxRuntime = {
      version: ort.env.versions.node,
      provider: session.provider,
      threads: session.threads,
      exportSeconds,
      openSeconds,
      modelBytes: bytes.length,
    };
  }
  if (args.only.includes("onnx") && session) {
    const { step, dispose } = samplingStep(ortDenoiser(session), "bench/sample");
    const rssBefore = currentRss();
    const resetOk = resetPeakRss();
    const timing = await timeRepeated(step, { warmup: args.warmup, reps: args.reps });
    const gflop = FORWARD_GFLOP_32 * scale;
    const peak = peakRss();
    console.log(line(`sampling step, onnxruntime (${session.provider})`, timing, gflop));
    console.log(
      `  peak RSS while sampling ${megabytes(peak)}${resetOk ? "" : " (process peak)"} ` +
        `(${megabytes(peak - rssBefore)} over the RSS before this phase)`,
    );
    result.onnx = {
      ...timing,
      gflop,
      gflops: gflop / timing.median,
      peakRss: peak,
      rssBefore,
    };
    dispose();
  }

  if (args.only.includes("data")) {
    const count = 4096;
    const rng = deriveRng(0, "bench/data");
    const bytes = new Uint8Array(count * args.size * args.size * 3);
    for (let i = 0; i < bytes.length; i++) bytes[i] = rng.int(256);
    const dataset = {
      count,
      size: args.size,
      channels: 3 as const,
      pixels: bytes,
      source: "bench: random bytes",
    };
    const order = rng.permutation(count);
    const flips = Array.from({ length: args.batch }, (_, i) => i % 2 === 0);
    const out = new Float32Array(pixels);
    let offset = 0;
    const batchesPerRep = 64;
    const timing = await timeRepeated(() => {
      for (let b = 0; b < batchesPerRep; b++) {
        offset = (offset + args.batch) % (count - args.batch);
        makeBatch(dataset, order.subarray(offset, offset + args.batch), { flips, out });
      }
    }, { warmup: args.warmup, reps: args.reps });
    const images = args.batch * batchesPerRep;
    const perImage = summarise(timing.raw.map((t) => t / images));
    console.log(
      `data pipeline (makeBatch, flips on half): ${(1 / perImage.median).toFixed(0)} images/s ` +
        `(min ${(1 / perImage.max).toFixed(0)}, max ${(1 / perImage.min).toFixed(0)})`,
    );
    result.data = {
      imagesPerSecond: 1 / perImage.median,
      minImagesPerSecond: 1 / perImage.max,
      maxImagesPerSecond: 1 / perImage.min,
      n: timing.n,
    };
  }

  if (args.only.includes("ddim")) {
    // What an evaluation costs: ddimCount samples, DDIM in 50 of T = 1000 steps, per engine.
    const ddimSchedule = makeSchedule(ScheduleSchema.parse({ kind: "linear", timesteps: 1000 }));
    const sampler = {
      kind: "ddim",
      steps: 50,
      eta: 0,
      variance: "posterior",
      initialNoise: "gaussian",
      stepNoise: true,
    } as const;
    const engines: [string, Denoiser][] = [];
    if (args.ddimEngines.includes("tfjs")) engines.push(["tfjs", tfjsDenoise]);
    if (session && args.ddimEngines.includes("onnxruntime")) {
      engines.push([`onnxruntime (${session.provider})`, ortDenoiser(session)]);
    }
    const evals: Record<string, unknown> = {};
    for (const [name, denoise] of engines) {
      const rng = deriveRng(0, "bench/ddim");
      const resetOk = resetPeakRss();
      const start = performance.now();
      for (let done = 0; done < args.ddimCount; done += args.batch) {
        const n = Math.min(args.batch, args.ddimCount - done);
        const x = await generate(denoise, ddimSchedule, { shape: [n, ...shape], sampler, rng });
        await x.data();
        x.dispose();
      }
      const seconds = (performance.now() - start) / 1000;
      const peak = peakRss();
      console.log(
        `${args.ddimCount} samples, DDIM 50 steps, ${name}: ${seconds.toFixed(1)} s; peak RSS ` +
          `${megabytes(peak)}${resetOk ? "" : " (process peak)"}`,
      );
      evals[name] = { seconds, peakRss: peak, count: args.ddimCount, steps: 50 };
    }
    result.ddim = evals;
  }

  await session?.release();
  if (args.only.includes("decode")) {
    const cacheRoot = new URL("../.cache", import.meta.url).pathname;
    const timings = await benchDecode({ count: args.decodeCount, size: args.size, cacheRoot });
    for (const t of timings) {
      console.log(
        `decode ${args.decodeCount} 64x64 PNGs to ${args.size}x${args.size}, ${t.what}: ` +
          `${t.seconds.toFixed(2)} s (${t.imagesPerSecond.toFixed(0)} images/s)` +
          (t.fromCache ? "" : ", decoded"),
      );
    }
    result.decode = timings;
  }

  if (args.only.includes("eval")) {
    result.eval = await benchEval({ samples: args.evalSamples, log: (l) => console.log(l) });
  }

  result.peakRss = peakRss();
  result.workers = workers ? args.workers : 0;
  result.microBatch = args.microBatch;
  workers?.close();
  model.dispose();
  if (args.torch.length > 0) result.torch = await compareWithTorch(args.torch, result);
  if (args.json !== undefined) {
    await Deno.writeTextFile(args.json, JSON.stringify(result, null, 2) + "\n");
    console.log(`wrote ${args.json}`);
  }
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message : String(e)}`);
    Deno.exit(1);
  }
}
