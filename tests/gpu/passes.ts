/**
 * Running a kernel family's passes in sequence, as the engine will: one buffer per binding name
 * for the whole sequence (so a pass reads what an earlier one wrote, `tmp` scratch included).
 * @module
 */
import type { KernelSpec } from "../../src/gpu/kernel.ts";
import { type KernelData, runKernel } from "../../src/gpu/testing.ts";

/**
 * Runs `specs` in order on `device`; each binding starts from `inputs[name]` (else zeros) and
 * carries what the passes before wrote. Returns the final contents of every binding some pass
 * writes.
 */
export async function runPasses(
  device: GPUDevice,
  specs: KernelSpec | KernelSpec[],
  inputs: KernelData = {},
): Promise<Record<string, Float32Array<ArrayBuffer>>> {
  const state: Record<string, Float32Array<ArrayBuffer> | Uint32Array<ArrayBuffer>> = {
    ...inputs,
  };
  const written: Record<string, Float32Array<ArrayBuffer>> = {};
  for (const spec of Array.isArray(specs) ? specs : [specs]) {
    const data: KernelData = {};
    for (const b of spec.bindings) {
      const v = state[b.name];
      if (v !== undefined) data[b.name] = v;
    }
    const out = await runKernel(device, spec, data);
    for (const [name, v] of Object.entries(out)) {
      const copy = new Float32Array(v);
      state[name] = copy;
      written[name] = copy;
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
