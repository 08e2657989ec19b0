/**
 * A few kernels run in sequence on persistent named buffers, as the engine runs them: each
 * pipeline compiled once, a binding bound to the buffer of its name, hyper written between
 * steps. What the multi-step kernel tests need beyond `runKernel`.
 * @module
 */
import type { KernelSpec } from "../../src/gpu/kernel.ts";

/** Pipelines of some kernels over buffers by name (each as long as its longest binding). */
export class KernelSequence {
  #device: GPUDevice;
  #pipelines = new Map<string, GPUComputePipeline>();
  #buffers = new Map<string, GPUBuffer>();

  /** Compiles `specs` and allocates (zeroed) their buffers. */
  constructor(device: GPUDevice, specs: readonly KernelSpec[]) {
    this.#device = device;
    const lengths = new Map<string, number>();
    for (const spec of specs) {
      for (const b of spec.bindings) {
        lengths.set(b.name, Math.max(lengths.get(b.name) ?? 0, b.length));
      }
      if (this.#pipelines.has(spec.name)) continue;
      const module = device.createShaderModule({ code: spec.code, label: spec.name });
      this.#pipelines.set(
        spec.name,
        device.createComputePipeline({
          layout: "auto",
          compute: { module, entryPoint: "main" },
          label: spec.name,
        }),
      );
    }
    for (const [name, length] of lengths) {
      this.#buffers.set(
        name,
        device.createBuffer({
          size: Math.max(4, length * 4),
          usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
          label: name,
        }),
      );
    }
  }

  /** Writes `data` to the buffer `name` (one writeBuffer). */
  write(name: string, data: Float32Array<ArrayBuffer>): void {
    const buffer = this.#buffers.get(name);
    if (!buffer) throw new Error(`no buffer ${name}`);
    this.#device.queue.writeBuffer(buffer, 0, data);
  }

  /**
   * Dispatches `specs` in order (one submit), `rename` mapping binding names to buffers; throws
   * the first validation error (of the compile too).
   */
  async run(specs: readonly KernelSpec[], rename: Record<string, string> = {}): Promise<void> {
    this.#device.pushErrorScope("validation");
    const encoder = this.#device.createCommandEncoder();
    for (const spec of specs) {
      const pipeline = this.#pipelines.get(spec.name);
      if (!pipeline) throw new Error(`${spec.name} was not compiled`);
      const pass = encoder.beginComputePass();
      pass.setPipeline(pipeline);
      pass.setBindGroup(
        0,
        this.#device.createBindGroup({
          layout: pipeline.getBindGroupLayout(0),
          entries: spec.bindings.map((b, i) => ({
            binding: i,
            resource: {
              buffer: this.#buffers.get(rename[b.name] ?? b.name)!,
              size: Math.max(4, b.length * 4),
            },
          })),
        }),
      );
      pass.dispatchWorkgroups(...spec.workgroups);
      pass.end();
    }
    this.#device.queue.submit([encoder.finish()]);
    const error = await this.#device.popErrorScope();
    if (error) throw new Error(`${specs.map((s) => s.name).join(", ")}: ${error.message}`);
  }

  /** The contents of buffer `name`. */
  async read(name: string): Promise<Float32Array> {
    const buffer = this.#buffers.get(name);
    if (!buffer) throw new Error(`no buffer ${name}`);
    const staging = this.#device.createBuffer({
      size: buffer.size,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const encoder = this.#device.createCommandEncoder();
    encoder.copyBufferToBuffer(buffer, 0, staging, 0, buffer.size);
    this.#device.queue.submit([encoder.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const out = new Float32Array(staging.getMappedRange().slice(0));
    staging.unmap();
    staging.destroy();
    return out;
  }

  /** Frees the buffers. */
  destroy(): void {
    this.#buffers.forEach((b) => b.destroy());
  }
}
