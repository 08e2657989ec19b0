/**
 * Running one kernel on a device with given inputs and reading its outputs back: what the
 * kernel tests (and the engine's self-checks) need, kept out of the engine's hot path.
 * @module
 */
import type { KernelSpec } from "./kernel.ts";

/** Inputs by binding name; a binding without one starts as zeros (or `fill`). */
export type KernelData = Record<string, Float32Array<ArrayBuffer> | Uint32Array<ArrayBuffer>>;

/**
 * Runs `spec` once on `device`. Each binding gets a buffer of its `length`, filled from
 * `inputs[name]` when given (else zeros); returns every `read_write` binding's contents after
 * the dispatch (as Float32Array; reinterpret for u32 bindings).
 */
export async function runKernel(
  device: GPUDevice,
  spec: KernelSpec,
  inputs: KernelData = {},
): Promise<Record<string, Float32Array>> {
  device.pushErrorScope("validation");
  const module = device.createShaderModule({ code: spec.code, label: spec.name });
  const pipeline = device.createComputePipeline({
    layout: "auto",
    compute: { module, entryPoint: "main" },
    label: spec.name,
  });
  const buffers = spec.bindings.map((b) => {
    const size = Math.max(4, b.length * 4);
    const buffer = device.createBuffer({
      size: Math.ceil(size / 4) * 4,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    const data = inputs[b.name];
    if (data !== undefined) {
      if (data.length !== b.length) {
        throw new RangeError(
          `${spec.name}: ${b.name} needs ${b.length} values, got ${data.length}`,
        );
      }
      device.queue.writeBuffer(buffer, 0, data);
    }
    return buffer;
  });
  const bindGroup = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: buffers.map((buffer, i) => ({ binding: i, resource: { buffer } })),
  });
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bindGroup);
  pass.dispatchWorkgroups(...spec.workgroups);
  pass.end();
  const reads = spec.bindings.flatMap((b, i) => {
    if (b.access !== "read_write") return [];
    const staging = device.createBuffer({
      size: buffers[i].size,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    encoder.copyBufferToBuffer(buffers[i], 0, staging, 0, buffers[i].size);
    return [{ name: b.name, length: b.length, staging }];
  });
  device.queue.submit([encoder.finish()]);
  const error = await device.popErrorScope();
  if (error) throw new Error(`${spec.name}: ${error.message}`);
  const out: Record<string, Float32Array> = {};
  for (const r of reads) {
    await r.staging.mapAsync(GPUMapMode.READ);
    out[r.name] = new Float32Array(r.staging.getMappedRange().slice(0, r.length * 4));
    r.staging.unmap();
    r.staging.destroy();
  }
  buffers.forEach((b) => b.destroy());
  return out;
}
