/**
 * The compiled WebGPU engine for the U-Net family (issue 18). Placeholder: see executor.ts.
 * @module
 */
export * from "./executor.ts";
export { lowerGraph, type Plan } from "./plan.ts";
export { type ParamLayout, paramLayout } from "./layout.ts";
