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

/** A session on one model with the provider that ran it. */
export interface OrtModel {
  /** The execution provider the session was created with (ORT puts unsupported nodes on the CPU). */
  provider: ExecutionProvider;
  /** Why that provider: what was tried before it and why it was passed over. */
  reason: string;
  /** Intra-op threads of the CPU provider. */
  threads: number;
  /** Runs the model on x (NHWC, `shape`) and timesteps t; returns the output (same shape as x). */
  run(x: Float32Array, t: Float32Array, shape: number[]): Promise<Float32Array>;
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

async function probeHardwareGpu(): Promise<boolean> {
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) return false;
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
    return {
      provider,
      reason,
      threads,
      run: async (x, t, shape) => {
        const result = await session.run({
          x: new ort.Tensor("float32", x, shape),
          t: new ort.Tensor("float32", t, [shape[0]]),
        });
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
