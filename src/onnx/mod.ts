/**
 * `sampler.engine`: what runs the network while sampling. `tfjs` is the run's tfjs backend;
 * `onnxruntime` exports the trained weights (`checkpoint/model.safetensors`, or
 * `ema.safetensors` when the experiment keeps a weight average) to `checkpoint/model.onnx` and
 * runs it in ONNX Runtime. Either way the samplers see the same `denoise(x_t, t)`, and a
 * conditional model one more per set of labels (classifier-free guidance mixes the two).
 * @module
 */
import { join } from "node:path";
import type { Experiment, ModelConfig } from "../../schemas/experiment.ts";
import type { Denoiser } from "../diffusion/sampler.ts";
import { sha256Hex, writeFileAtomic } from "../io/files.ts";
import { decodeSafetensors } from "../io/safetensors.ts";
import { type ConditionInput, encodedWidth, encodeLabels } from "../model/mod.ts";
import { tf } from "../tf.ts";
import { decodeModel } from "./graph.ts";
import { loadOnnxRuntime, openModel, type Ort, type OrtModel, type UnetFeeds } from "./runtime.ts";
import { buildUnetOnnx } from "./export.ts";

export { buildUnetOnnx, type UnetOnnxOptions } from "./export.ts";
export {
  defaultProviders,
  type ExecutionProvider,
  loadOnnxRuntime,
  openModel,
  type Ort,
  type OrtModel,
  OrtUnavailableError,
  type UnetFeeds,
} from "./runtime.ts";

/** The sampling engine's record in the manifest (a type alias: it is stored as a JSON record). */
export type EngineInfo = {
  /** `sampler.engine` as configured. */
  requested: Experiment["sampler"]["engine"];
  /** The engine that ran (tfjs when onnxruntime could not load). */
  name: Experiment["sampler"]["engine"];
  /** Why this engine (and, for onnxruntime, this execution provider). */
  reason: string;
  /** onnxruntime: the execution provider the session was created with. */
  executionProvider?: string;
  /** onnxruntime: intra-op threads. */
  threads?: number;
  /** onnxruntime: version of onnxruntime-node. */
  version?: string;
  /** onnxruntime: the model file, relative to the run folder. */
  model?: string;
};

/** A denoiser and what it runs on. */
export interface SamplingEngine {
  /** The network as the samplers see it (a conditional one: with its null embedding). */
  denoise: Denoiser;
  /** A conditional network given `condition` (its rows are the batch the samplers pass). */
  conditioned(condition: ConditionInput): Denoiser;
  /** What ran, for the manifest. */
  info: EngineInfo;
  /** Frees the native session (nothing for tfjs). */
  close(): Promise<void>;
}

/** Bumped when the graph the exporter writes changes, so that cached model.onnx files are redone. */
const EXPORTER_VERSION = "2";

/** The cached `model.onnx` of a checkpoint: its bytes and whether an existing file was reused. */
export interface ExportedModel {
  /** Path of model.onnx. */
  path: string;
  /** Its bytes. */
  bytes: Uint8Array;
  /** True when the file on disk was already the export of these weights. */
  reused: boolean;
}

/**
 * `<checkpointDir>/model.onnx` for the weights of that checkpoint (`ema.safetensors` with
 * `options.ema`, else `model.safetensors`), written atomically, or the existing file when its
 * metadata says it was exported from the same weight bytes, image size and exporter version.
 */
export async function exportCheckpoint(
  checkpointDir: string,
  options: { model: ModelConfig; size: number; ema: boolean; labelSizes?: number[] },
): Promise<ExportedModel> {
  const weightsFile = options.ema ? "ema.safetensors" : "model.safetensors";
  const raw = await Deno.readFile(join(checkpointDir, weightsFile));
  const metadata = {
    "ddpm-lab.exporter": EXPORTER_VERSION,
    "ddpm-lab.weights": `${weightsFile} sha256:${sha256Hex(raw)}`,
    "ddpm-lab.size": String(options.size),
  };
  const path = join(checkpointDir, "model.onnx");
  try {
    const existing = await Deno.readFile(path);
    const props = new Map(decodeModel(existing).metadataProps.map((p) => [p.key, p.value]));
    if (Object.entries(metadata).every(([k, v]) => props.get(k) === v)) {
      return { path, bytes: existing, reused: true };
    }
  } catch {
    // no model.onnx yet, or not a readable one: export it
  }
  const bytes = buildUnetOnnx(options.model, decodeSafetensors(raw).tensors, {
    size: options.size,
    metadata,
    ...(options.labelSizes ? { labelSizes: options.labelSizes } : {}),
  });
  await writeFileAtomic(path, bytes);
  return { path, bytes, reused: false };
}

/** Labels of a conditional model, as the ONNX graph takes them. */
export interface OrtLabels {
  /** Values of each conditioned attribute, in order. */
  sizes: number[];
  /** `model.conditioning.encoding`. */
  encoding: "onehot" | "integer";
  /** The labels (and dropped examples); absent: every example gets the null embedding. */
  condition?: ConditionInput;
}

/**
 * The samplers' denoiser over an ORT session: x and t go in as float32 arrays; a conditional
 * model's labels are encoded here (`encodeLabels`), or, without any, every example is marked
 * `uncond` (the null embedding).
 */
export function ortDenoiser(session: OrtModel, labels?: OrtLabels): Denoiser {
  return async (x, t) => {
    const [xs, ts] = await Promise.all([x.data(), t.data()]);
    const feeds: UnetFeeds = { x: xs as Float32Array, t: Float32Array.from(ts), shape: x.shape };
    if (labels) {
      const batch = x.shape[0];
      const c = labels.condition;
      feeds.condition = c
        ? {
          labels: encodeLabels(c.labels, labels),
          uncond: c.drop ? Float32Array.from(c.drop) : new Float32Array(batch),
        }
        : {
          labels: new Float32Array(batch * encodedWidth(labels)),
          uncond: new Float32Array(batch).fill(1),
        };
    }
    return tf.tensor4d(await session.run(feeds), x.shape);
  };
}

/** Options of {@link createSamplingEngine}. */
export interface EngineOptions {
  /**
   * The tfjs denoiser of the run, without labels or (a conditional model) with `condition`;
   * used for `tfjs`, and as the fallback.
   */
  tfjs: (condition?: ConditionInput) => Denoiser;
  /** A description of the tfjs side for the manifest (e.g. "wasm"). */
  tfjsBackend: string;
  /** The run's checkpoint folder (holding the trained weights). */
  checkpointDir: string;
  /** Image size. */
  size: number;
  /** A conditional model: the number of values of each conditioned attribute. */
  labelSizes?: number[];
  /** Progress lines. */
  log: (line: string) => void;
  /** Replaces the import of onnxruntime-node (tests simulate a machine where it cannot load). */
  importOrt?: () => Promise<Ort>;
}

/**
 * The denoiser `config.sampler.engine` asks for. With `onnxruntime` the checkpoint is exported
 * (or its cached export reused) and opened on the best execution provider; when ONNX Runtime
 * cannot load or run the model, the message is logged and the tfjs denoiser is used instead.
 */
export async function createSamplingEngine(
  config: Experiment,
  options: EngineOptions,
): Promise<SamplingEngine> {
  const requested = config.sampler.engine ?? "tfjs";
  const tfjs = (reason: string): SamplingEngine => ({
    denoise: options.tfjs(),
    conditioned: (condition) => options.tfjs(condition),
    info: { requested, name: "tfjs", reason },
    close: () => Promise.resolve(),
  });
  if (requested === "tfjs") return tfjs(`sampler.engine is tfjs (${options.tfjsBackend})`);
  let ort: Ort;
  try {
    ort = await loadOnnxRuntime(options.importOrt);
  } catch (err) {
    const message = `sampler.engine onnxruntime: ${(err as Error).message}; sampling with tfjs ` +
      `(${options.tfjsBackend}) instead`;
    options.log(message);
    return tfjs(message);
  }
  const exported = await exportCheckpoint(options.checkpointDir, {
    model: config.model,
    size: options.size,
    ema: config.optimizer.ema !== undefined,
    ...(options.labelSizes ? { labelSizes: options.labelSizes } : {}),
  });
  let session: OrtModel;
  try {
    session = await openModel(ort, exported.bytes);
  } catch (err) {
    const message = `sampler.engine onnxruntime: ${(err as Error).message}; sampling with tfjs ` +
      `(${options.tfjsBackend}) instead`;
    options.log(message);
    return tfjs(message);
  }
  options.log(
    `sampling with onnxruntime ${ort.env.versions.node ?? ""} on ${session.provider} ` +
      `(${session.threads} threads; ${exported.reused ? "cached" : "exported"} ` +
      `checkpoint/model.onnx)`,
  );
  const cond = config.model.conditioning;
  const labels = (condition?: ConditionInput): OrtLabels | undefined =>
    cond && options.labelSizes
      ? { sizes: options.labelSizes, encoding: cond.encoding, condition }
      : undefined;
  return {
    denoise: ortDenoiser(session, labels()),
    conditioned: (condition) => ortDenoiser(session, labels(condition)),
    info: {
      requested,
      name: "onnxruntime",
      reason: `execution provider ${session.provider}: ${session.reason}`,
      executionProvider: session.provider,
      threads: session.threads,
      version: ort.env.versions.node,
      model: "checkpoint/model.onnx",
    },
    close: () => session.release(),
  };
}
