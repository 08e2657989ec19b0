/**
 * Running a builder's result (one kernel or several passes) on the test device: each pass's
 * read_write outputs become inputs of the later passes, the way the engine binds one buffer
 * per name (`tmp` scratch included).
 * @module
 */
import type { KernelSpec } from "../../src/gpu/kernel.ts";
import { type KernelData, runKernel } from "../../src/gpu/testing.ts";

/** Runs `specs` in order on `device`; returns every binding any pass wrote, by name. */
export async function runPasses(
  device: GPUDevice,
  specs: KernelSpec | KernelSpec[],
  inputs: KernelData = {},
): Promise<Record<string, Float32Array>> {
  const data: Record<string, Float32Array<ArrayBuffer>> = {};
  for (const [k, v] of Object.entries(inputs)) data[k] = new Float32Array(v.buffer.slice(0));
  const written: Record<string, Float32Array> = {};
  for (const spec of Array.isArray(specs) ? specs : [specs]) {
    const out = await runKernel(device, spec, data);
    for (const [k, v] of Object.entries(out)) {
      data[k] = new Float32Array(v);
      written[k] = v;
    }
  }
  return written;
}

/** Whether two arrays hold the same bytes. */
export function sameBytes(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  return x.every((v, i) => v === y[i]);
}
