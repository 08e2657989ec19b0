/**
 * The compiled WebGPU engine: kernels with their shapes baked in (./kernels, one file per
 * family with a TypeScript reference beside each), the device with its real limits.
 * @module
 */
export * from "./kernel.ts";
export * from "./device.ts";
