/**
 * Chooses and starts the TensorFlow.js backend that runs training and sampling.
 *
 * - `wasm` (the default): XNNPACK on WebAssembly, single-threaded SIMD build, with the fast
 *   convolution gradients of {@link registerWasmKernels}; same bits on rerun.
 * - `cpu`: pure JavaScript, slow, deterministic.
 * - `webgpu`: training and sampling run on the compiled WebGPU engine (src/gpu: the U-Net's
 *   traced graph as a static plan of WGSL kernels); needs an adapter from `navigator.gpu`. What
 *   tfjs still computes on the host (evaluation features, figures) runs on wasm.
 * - `tensorflow`: `@tensorflow/tfjs-node-gpu` or `@tensorflow/tfjs-node` (libtensorflow), loaded
 *   only when installed with its native binding.
 * - `auto`: the WebGPU engine on a hardware adapter, else tensorflow when installed, else wasm.
 * @module
 */
import { tf } from "../tf.ts";
import { UserError } from "../errors.ts";
import { registerWasmKernels } from "./wasm_kernels.ts";

/** The backends that can be requested; `auto` picks one (see {@link initBackend}). */
export type BackendName = "auto" | "tensorflow" | "webgpu" | "wasm" | "cpu";

/** Which backend was requested, which one runs and why. */
export interface BackendInfo {
  /** The backend that was asked for. */
  requested: BackendName;
  /** The tfjs backend that runs (`tf.getBackend()`): `tensorflow`, `wasm` or `cpu`. */
  name: string;
  /**
   * What trains and samples the network: `tfjs` (the backend `name`) or `webgpu` (the compiled
   * engine of src/gpu, with tfjs on `name` for the rest).
   */
  engine: "tfjs" | "webgpu";
  /** Why this backend was chosen, one sentence. */
  reason: string;
  /** Threads of the wasm backend. */
  threads?: number;
  /** The WebGPU adapter, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)` or `NVIDIA H200`. */
  adapter?: string;
  /**
   * The GPU driver, where the system tells it (WebGPU does not): the first line of
   * `/proc/driver/nvidia/version` for NVIDIA's; the adapter's vendor and device ids otherwise.
   */
  driver?: string;
  /** The version of `@tensorflow/tfjs`. */
  tfjsVersion: string;
}

const BACKEND_NAMES: readonly BackendName[] = ["auto", "tensorflow", "webgpu", "wasm", "cpu"];
const TFJS_NODE_VERSION = "4.22.0";
/** tfjs-node packages, GPU first: importing both registers every kernel twice. */
const TFJS_NODE_PACKAGES = ["@tensorflow/tfjs-node-gpu", "@tensorflow/tfjs-node"] as const;
const SOFTWARE_ADAPTERS = /llvmpipe|lavapipe|swiftshader|softpipe|software/i;

interface Adapter {
  description: string;
  software: boolean;
  driver?: string;
}

/** The driver line the system gives for the adapter (see {@link BackendInfo.driver}). */
function driverOf(info: GPUAdapterInfo): string | undefined {
  try {
    const line = Deno.readTextFileSync("/proc/driver/nvidia/version").split("\n")[0].trim();
    if (line !== "") return line;
  } catch {
    // not NVIDIA's kernel driver, or no /proc
  }
  const hex = (v: string) => /^\d+$/.test(v) ? `0x${Number(v).toString(16)}` : v;
  return info.vendor ? `vendor ${hex(info.vendor)}, device ${hex(info.device ?? "")}` : undefined;
}

async function setBackend(name: string, requested: BackendName): Promise<void> {
  let ok = false;
  let cause: unknown;
  try {
    ok = await tf.setBackend(name);
    await tf.ready();
  } catch (e) {
    cause = e;
    ok = false;
  }
  if (!ok || tf.getBackend() !== name) {
    const why = cause instanceof Error ? `: ${cause.message}` : "";
    const others = BACKEND_NAMES.filter((b) => b !== name && b !== "tensorflow");
    const chose = requested === name ? "" : ` (chosen by backend '${requested}')`;
    throw new UserError(`the tfjs backend '${name}'${chose} failed to initialize${why}`, {
      path: "backend",
      expected: `a backend that starts on this machine: --set backend=${
        others.join(" or --set backend=")
      } (nothing was written)`,
    });
  }
}

async function initWasm(requested: BackendName, reason: string): Promise<BackendInfo> {
  const wasm = await import("@tensorflow/tfjs-backend-wasm");
  // The threaded build starts its workers from a blob: URL that Deno rejects or hangs on;
  // the single-threaded SIMD build is reliable and gives the same bits on every run.
  tf.env().set("WASM_HAS_MULTITHREAD_SUPPORT", false);
  registerWasmKernels();
  await setBackend("wasm", requested);
  return {
    requested,
    name: "wasm",
    engine: "tfjs",
    reason,
    threads: wasm.getThreadsCount(),
    tfjsVersion: tf.version.tfjs,
  };
}

async function initCpu(requested: BackendName): Promise<BackendInfo> {
  await setBackend("cpu", requested);
  return {
    requested,
    name: "cpu",
    engine: "tfjs",
    reason: "the pure JavaScript cpu backend was requested (slow, deterministic).",
    tfjsVersion: tf.version.tfjs,
  };
}

async function findAdapter(): Promise<Adapter | undefined> {
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (gpu === undefined) return undefined;
  let adapter: GPUAdapter | null = null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  } catch {
    return undefined;
  }
  if (adapter === null) return undefined;
  const info = adapter.info;
  const parts = [info.vendor, info.architecture, info.device, info.description]
    .filter((p) => p !== undefined && p !== "" && p !== "0");
  const description = info.description || parts.join(" ") || "unknown adapter";
  const software = SOFTWARE_ADAPTERS.test(parts.join(" ")) ||
    (info as { isFallbackAdapter?: boolean }).isFallbackAdapter === true;
  return { description, software, driver: driverOf(info) };
}

async function initWebgpu(
  requested: BackendName,
  adapter: Adapter | undefined,
): Promise<BackendInfo> {
  if (adapter === undefined) {
    throw new UserError(
      "no WebGPU adapter is available (navigator.gpu gave none): Deno reaches a GPU through " +
        "Vulkan, which needs a driver (NVIDIA's, or Mesa's mesa-vulkan-drivers) and the loader " +
        "libvulkan1",
      {
        path: "backend",
        expected: "--set backend=wasm (the CPU) or --set backend=auto (a GPU where there is " +
          "one) on this machine; nothing was written",
      },
    );
  }
  const kind = adapter.software ? "a software (CPU-emulated, slow)" : "a hardware";
  const reason = requested === "auto"
    ? `auto found ${kind} WebGPU adapter: the WebGPU engine trains and samples.`
    : `webgpu was requested and ${kind} adapter was found: the WebGPU engine trains and ` +
      `samples (the same bytes on rerun on the same GPU and driver).`;
  const host = await initWasm(requested, reason);
  return {
    ...host,
    engine: "webgpu",
    adapter: adapter.description,
    driver: adapter.driver,
  };
}

/**
 * The tfjs-node packages whose native binding (`lib/napi-v*\/tfjs_binding.node`) is installed
 * in this project's `node_modules`, GPU first. Importing an uninstalled one would make Deno
 * download it and rewrite the lockfile, so only these are imported.
 */
function installedTfjsNode(): string[] {
  const store = new URL("../../node_modules/.deno/", import.meta.url);
  const found: string[] = [];
  for (const pkg of TFJS_NODE_PACKAGES) {
    const prefix = `${pkg.replace("/", "+")}@`;
    try {
      for (const entry of Deno.readDirSync(store)) {
        if (!entry.name.startsWith(prefix)) continue;
        const lib = new URL(`${entry.name}/node_modules/${pkg}/lib/`, store);
        const hasBinding = [...Deno.readDirSync(lib)].some((napi) => {
          try {
            return Deno.statSync(new URL(`${napi.name}/tfjs_binding.node`, lib)).isFile;
          } catch {
            return false;
          }
        });
        if (hasBinding) {
          found.push(pkg);
          break;
        }
      }
    } catch {
      // No node_modules, no read permission or no lib/ folder: not installed.
    }
  }
  return found;
}

/** Imports tfjs-node(-gpu); returns the error messages when none could be loaded. */
async function loadTfjsNode(): Promise<{ loaded?: string; errors: string[] }> {
  const errors: string[] = [];
  const installed = installedTfjsNode();
  for (const pkg of TFJS_NODE_PACKAGES) {
    if (!installed.includes(pkg)) {
      errors.push(`${pkg}: not installed (no lib/napi-v*/tfjs_binding.node in node_modules)`);
      continue;
    }
    // A string variable, so that `deno check` does not try to resolve the package.
    const specifier = `npm:${pkg}@${TFJS_NODE_VERSION}`;
    try {
      await import(specifier);
      return { loaded: pkg, errors };
    } catch (e) {
      errors.push(`${pkg}: ${e instanceof Error ? e.message.split("\n")[0] : String(e)}`);
    }
  }
  return { errors };
}

async function initTensorflow(requested: BackendName): Promise<BackendInfo> {
  const { loaded, errors } = await loadTfjsNode();
  if (loaded === undefined) {
    throw new UserError(
      `the tensorflow backend could not be loaded (${errors.join("; ")}). Install it with ` +
        `\`npm install @tensorflow/tfjs-node-gpu@${TFJS_NODE_VERSION}\` (or ` +
        `@tensorflow/tfjs-node for CPU) or \`deno install --allow-scripts ` +
        `npm:@tensorflow/tfjs-node-gpu@${TFJS_NODE_VERSION}\`: its install script downloads ` +
        `libtensorflow, so it needs network access`,
      {
        path: "backend",
        expected: "--set backend=wasm (the default), cpu, webgpu or auto on this machine; " +
          "nothing was written",
      },
    );
  }
  await setBackend("tensorflow", requested);
  return {
    requested,
    name: "tensorflow",
    engine: "tfjs",
    reason: requested === "auto"
      ? `auto found no hardware WebGPU adapter and ${loaded} is installed.`
      : `tensorflow was requested and ${loaded} was loaded.`,
    tfjsVersion: tf.version.tfjs,
  };
}

async function initAuto(): Promise<BackendInfo> {
  const adapter = await findAdapter();
  if (adapter !== undefined && !adapter.software) return await initWebgpu("auto", adapter);
  if (installedTfjsNode().length > 0) {
    try {
      return await initTensorflow("auto");
    } catch {
      // Installed but not loadable: fall back to wasm.
    }
  }
  const gpu = adapter === undefined ? "no WebGPU adapter" : `only a software WebGPU adapter`;
  return await initWasm(
    "auto",
    `auto found ${gpu} and no loadable tfjs-node, so it uses wasm (XNNPACK, deterministic).`,
  );
}

/**
 * Starts the backend `name` and makes it the active tfjs backend. Throws a {@link UserError}
 * when it cannot run here (no WebGPU adapter, tfjs-node not installed, unknown name).
 */
export async function initBackend(name: BackendName): Promise<BackendInfo> {
  switch (name) {
    case "wasm":
      return await initWasm("wasm", "wasm was requested (XNNPACK, single thread, deterministic).");
    case "cpu":
      return await initCpu("cpu");
    case "webgpu":
      return await initWebgpu("webgpu", await findAdapter());
    case "tensorflow":
      return await initTensorflow("tensorflow");
    case "auto":
      return await initAuto();
    default:
      throw new UserError(`unknown backend '${String(name)}'`, {
        path: "backend",
        expected: `one of ${BACKEND_NAMES.map((b) => `'${b}'`).join(", ")}`,
      });
  }
}
