/**
 * Opening a WebGPU device with the adapter's real limits: without asking, a device gets
 * WebGPU's defaults (128 MiB storage bindings), so the engine requests what the adapter has.
 * @module
 */

/** What the manifest records about the adapter. */
export interface AdapterDescription {
  /** Vendor (`nvidia`, `mesa`). */
  vendor: string;
  /** Architecture (`hopper`, `llvm`). */
  architecture: string;
  /** Device name as the driver gives it. */
  device: string;
  /** Driver description (`NVIDIA 580.65`, `llvmpipe (LLVM 15.0.6, 256 bits)`). */
  description: string;
  /** Whether this is a software (fallback) adapter such as llvmpipe. */
  software: boolean;
}

/** An open device and its adapter. */
export interface GpuContext {
  /** The device, with the adapter's limits requested. */
  device: GPUDevice;
  /** The adapter's identity. */
  adapter: AdapterDescription;
  /** The limits the device got. */
  limits: GPUSupportedLimits;
}

const REQUESTED_LIMITS = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxStorageBuffersPerShaderStage",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupsPerDimension",
] as const;

/** The adapter `navigator.gpu` offers, or undefined when there is none (no WebGPU, no driver). */
export async function requestAdapter(): Promise<GPUAdapter | undefined> {
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (gpu === undefined) return undefined;
  try {
    return (await gpu.requestAdapter({ powerPreference: "high-performance" })) ?? undefined;
  } catch {
    return undefined;
  }
}

/** Describes an adapter for the manifest. */
export function describeAdapter(adapter: GPUAdapter): AdapterDescription {
  const info = adapter.info;
  const text = `${info.vendor} ${info.architecture} ${info.device} ${info.description}`;
  return {
    vendor: info.vendor,
    architecture: info.architecture,
    device: info.device,
    description: info.description,
    software: (info as { isFallbackAdapter?: boolean }).isFallbackAdapter === true ||
      /llvmpipe|lavapipe|swiftshader/i.test(text),
  };
}

/**
 * Opens a device on `adapter` (default: the one `navigator.gpu` offers) with the adapter's
 * limits; undefined when there is no adapter.
 */
export async function openGpu(adapter?: GPUAdapter): Promise<GpuContext | undefined> {
  const a = adapter ?? await requestAdapter();
  if (a === undefined) return undefined;
  const requiredLimits: Record<string, number> = {};
  for (const key of REQUESTED_LIMITS) requiredLimits[key] = a.limits[key];
  const device = await a.requestDevice({ requiredLimits });
  return { device, adapter: describeAdapter(a), limits: device.limits };
}
