/**
 * The compiled WebGPU engine (`backend: "webgpu"`): the U-Net's traced layer graph lowered into
 * a static plan of WGSL kernels (./engine), the kernels with their shapes baked in (./kernels,
 * one file per family with a TypeScript reference beside each), the device with its real limits.
 * @module
 */
export * from "./kernel.ts";
export * from "./device.ts";
export {
  asTrainEngine,
  GpuEngine,
  type GpuEngineInfo,
  openRunEngine,
  type RunEngine,
} from "./engine/mod.ts";
