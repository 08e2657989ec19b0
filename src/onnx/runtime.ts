/**
 * ONNX Runtime (`onnxruntime-node`) from Deno: loading it with a clear message when it cannot
 * load, choosing an execution provider (CUDA, then WebGPU on a hardware adapter, then the CPU)
 * and running a model on float32 arrays.
 *
 * The package's Linux x64 CPU library ships inside it; its install script only downloads the
 * CUDA providers and is not run by `deno install` (nor needed). Loading its native addon needs
 * `--allow-ffi` (the deno tasks pass -A).
 * @module
 */
import type * as OrtTypes from "onnxruntime-node";

/** The `onnxruntime-node` module. */
export type Ort = typeof OrtTypes;

/** An execution provider this project asks ORT for. */
export type ExecutionProvider = "cuda" | "webgpu" | "cpu";

/** Thrown when `onnxruntime-node` cannot be imported; the message says why and what to do. */
export class OrtUnavailableError extends Error {
  /** The error of the import itself. */
  override cause: unknown;
  constructor(cause: unknown) {
    const detail = cause instanceof Error ? cause.message.split("\n")[0] : String(cause);
    const hint = /ffi|NotCapable|PermissionDenied/i.test(detail)
      ? "run with --allow-ffi (the deno tasks pass -A)"
      : "run `deno install` so that node_modules holds onnxruntime-node and its native library";
    super(`onnxruntime-node could not be loaded (${detail}): ${hint}`);
    this.name = "OrtUnavailableError";
    this.cause = cause;
  }
}

/**
 * Imports `onnxruntime-node`; `importer` replaces the import (tests simulate a machine where it
 * cannot load). Throws {@link OrtUnavailableError}.
 */
export async function loadOnnxRuntime(
  importer: () => Promise<Ort> = () => import("onnxruntime-node"),
): Promise<Ort> {
  try {
    const ort = await importer();
    // The native addon loads lazily: touch it so that a missing library fails here.
    ort.listSupportedBackends();
    return ort;
  } catch (err) {
    throw new OrtUnavailableError(err);
  }
}

/** The inputs of one run of the U-Net graph (./export.ts), as float32 arrays. */
export interface UnetFeeds {
  /** x_t, NHWC. */
  x: Float32Array;
  /** Timesteps, one per example. */
  t: Float32Array;
  /** The shape of x: [batch, size, size, channels]. */
  shape: number[];
  /**
   * A conditional model's encoded labels, [batch, E] row-major, and `uncond` (1: the null
   * embedding); both are required by a conditional graph and refused by another.
   */
  condition?: { labels: Float32Array; uncond: Float32Array };
}

/** A session on one model with the provider that ran it. */
export interface OrtModel {
  /** The execution provider the session was created with (ORT puts unsupported nodes on the CPU). */
  provider: ExecutionProvider;
  /** Why that provider: what was tried before it and why it was passed over. */
  reason: string;
  /** Intra-op threads of the CPU provider. */
  threads: number;
  /** Whether the model takes labels (`condition` and `uncond` inputs). */
  conditional: boolean;
  /** Runs the model; returns its output (the shape of x). */
  run(feeds: UnetFeeds): Promise<Float32Array>;
  /** Frees the native session. */
  release(): Promise<void>;
}

/** Options of {@link openModel}. */
export interface OpenModelOptions {
  /** Providers to try in order (default: cuda, webgpu when a hardware adapter exists, cpu). */
  providers?: ExecutionProvider[];
  /** Intra-op threads (default: every core, `navigator.hardwareConcurrency`). */
  threads?: number;
}

let hardwareGpuProbe: Promise<boolean> | undefined;

/** Whether Deno sees a hardware (not software-emulated) WebGPU adapter (probed once). */
function hardwareGpu(): Promise<boolean> {
  hardwareGpuProbe ??= probeHardwareGpu();
  return hardwareGpuProbe;
}

/**
 * On Linux a hardware adapter needs a DRM render node or an NVIDIA device file; without either
 * the probe is skipped (asking Vulkan would only find the software rasteriser, and its loader
 * prints warnings on machines without a desktop session).
 */
function gpuDeviceFiles(): boolean {
  if (Deno.build.os !== "linux") return true;
  for (const dir of ["/dev/dri", "/dev"]) {
    try {
      for (const entry of Deno.readDirSync(dir)) {
        if (/^renderD\d+$|^nvidia\d+$/.test(entry.name)) return true;
      }
    } catch {
      // no such folder, or not readable
    }
  }
  return false;
}

async function probeHardwareGpu(): Promise<boolean> {
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu || !gpuDeviceFiles()) return false;
  try {
    const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
    if (!adapter) return false;
    const info = adapter.info;
    const text = [info.vendor, info.architecture, info.device, info.description].join(" ");
    return !/llvmpipe|lavapipe|swiftshader|softpipe|software/i.test(text) &&
      (info as { isFallbackAdapter?: boolean }).isFallbackAdapter !== true;
  } catch {
    return false;
  }
}

/**
 * Whether the CUDA provider library is installed beside the CPU one: it is not bundled, and only
 * the package's install script (`deno install --allow-scripts=npm:onnxruntime-node`, with
 * network access) puts it there.
 */
function cudaInstalled(): boolean {
  const store = new URL("../../node_modules/.deno/", import.meta.url);
  const arch = Deno.build.arch === "aarch64" ? "arm64" : "x64";
  const lib = Deno.build.os === "windows"
    ? "onnxruntime_providers_cuda.dll"
    : "libonnxruntime_providers_cuda.so";
  try {
    for (const entry of Deno.readDirSync(store)) {
      if (!entry.name.startsWith("onnxruntime-node@")) continue;
      const bin = new URL(
        `${entry.name}/node_modules/onnxruntime-node/bin/napi-v6/${
          Deno.build.os === "windows" ? "win32" : Deno.build.os
        }/${arch}/`,
        store,
      );
      try {
        Deno.statSync(new URL(lib, bin));
        return true;
      } catch {
        // not installed in this copy
      }
    }
  } catch {
    // no node_modules (another package manager): CUDA is not tried
  }
  return false;
}

/**
 * The providers tried by default: CUDA when its library is installed, WebGPU on a hardware
 * adapter, then the CPU.
 */
export async function defaultProviders(ort: Ort): Promise<ExecutionProvider[]> {
  const out: ExecutionProvider[] = [];
  const backends = ort.listSupportedBackends();
  const cuda = backends.find((b) => b.name === "cuda");
  if (cuda && (cuda.bundled || cudaInstalled())) out.push("cuda");
  if (backends.some((b) => b.name === "webgpu") && await hardwareGpu()) out.push("webgpu");
  out.push("cpu");
  return out;
}

/**
 * Opens `model` (serialised ONNX) with the first provider of `options.providers` that creates a
 * session; the result says which one and why.
 */
export async function openModel(
  ort: Ort,
  model: Uint8Array,
  options: OpenModelOptions = {},
): Promise<OrtModel> {
  const providers = options.providers ?? await defaultProviders(ort);
  const threads = options.threads ?? navigator.hardwareConcurrency ?? 1;
  const skipped: string[] = [];
  for (const provider of providers) {
    let session: OrtTypes.InferenceSession;
    try {
      session = await ort.InferenceSession.create(model, {
        executionProviders: [provider],
        intraOpNumThreads: threads,
        interOpNumThreads: 1,
        executionMode: "sequential",
        graphOptimizationLevel: "all",
        logSeverityLevel: 3,
      });
    } catch (err) {
      const detail = err instanceof Error ? err.message.split("\n")[0] : String(err);
      skipped.push(`${provider}: ${detail}`);
      continue;
    }
    const reason = skipped.length
      ? `first provider that loaded of ${providers.join(", ")} (${skipped.join("; ")})`
      : `first of ${providers.join(", ")}`;
    const conditional = session.inputNames.includes("condition");
    return {
      provider,
      reason,
      threads,
      conditional,
      run: async ({ x, t, shape, condition }) => {
        const batch = shape[0];
        if (conditional !== (condition !== undefined)) {
          throw new Error(
            conditional
              ? "onnxruntime: this model is conditional: labels are needed (condition, uncond)"
              : "onnxruntime: labels given to an unconditional model",
          );
        }
        const feeds: Record<string, OrtTypes.Tensor> = {
          x: new ort.Tensor("float32", x, shape),
          t: new ort.Tensor("float32", t, [batch]),
        };
        if (condition) {
          feeds.condition = new ort.Tensor("float32", condition.labels, [
            batch,
            condition.labels.length / batch,
          ]);
          feeds.uncond = new ort.Tensor("float32", condition.uncond, [batch]);
        }
        const result = await session.run(feeds);
        const out = result.out;
        const data = out.data as Float32Array;
        out.dispose();
        return data;
      },
      release: () => session.release(),
    };
  }
  throw new Error(`onnxruntime: no execution provider could run the model (${skipped.join("; ")})`);
}
