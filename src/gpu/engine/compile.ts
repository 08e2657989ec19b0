/**
 * Making a plan real on a device: its value buffers (shared with another plan's where they
 * fit: a plan's values live within one submit), its input buffer, and for every dispatch the
 * pipeline (one per distinct WGSL, with an explicit layout from the kernel's bindings, so a
 * binding the shader does not use is still valid) and the bind group of its buffer ranges.
 * @module
 */
import type { Binding } from "../kernel.ts";
import type { Plan } from "./plan.ts";
import type { Ref, StateBuffer } from "./types.ts";

/** One dispatch, ready to encode. */
export interface Command {
  /** The pipeline. */
  pipeline: GPUComputePipeline;
  /** Its buffers. */
  bindGroup: GPUBindGroup;
  /** Workgroups. */
  x: number;
  /** Workgroups. */
  y: number;
  /** Workgroups. */
  z: number;
}

/** A plan on the device. */
export interface CompiledPlan {
  /** The plan. */
  plan: Plan;
  /** The input buffer the host writes each step. */
  input: GPUBuffer;
  /** Its host copy (and a u32 view of it, for `slot`). */
  host: Float32Array<ArrayBuffer>;
  /** The u32 view of `host`. */
  hostU32: Uint32Array<ArrayBuffer>;
  /** The value buffers (some shared with another plan). */
  slots: GPUBuffer[];
  /** Every dispatch. */
  commands: Command[];
  /** Where the network output lies. */
  output: { buffer: GPUBuffer; offset: number };
}

/** The usage of every engine buffer. */
export function storageUsage(): number {
  return GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
}

/**
 * The pipelines and bind group layouts made on each device, by WGSL and binding accesses:
 * shared by every engine on the device (they are immutable), so a second engine of the same
 * shapes (another batch size's plan, a test's next case) compiles nothing again.
 */
const CACHES = new WeakMap<
  GPUDevice,
  { pipelines: Map<string, GPUComputePipeline>; layouts: Map<string, GPUBindGroupLayout> }
>();

/** Creates buffers, pipelines and bind groups for plans on one device, caching pipelines. */
export class DeviceCompiler {
  /** Bytes of every buffer made so far. */
  bytes = 0;
  /** Buffers made (to destroy). */
  readonly buffers: GPUBuffer[] = [];
  readonly #pipelines: Map<string, GPUComputePipeline>;
  readonly #layouts: Map<string, GPUBindGroupLayout>;

  constructor(
    readonly device: GPUDevice,
    readonly state: Partial<Record<StateBuffer, GPUBuffer>>,
  ) {
    let cache = CACHES.get(device);
    if (!cache) {
      cache = { pipelines: new Map(), layouts: new Map() };
      CACHES.set(device, cache);
    }
    this.#pipelines = cache.pipelines;
    this.#layouts = cache.layouts;
  }

  /** A zeroed buffer of `floats` f32 (rounded up to 16 bytes). */
  buffer(floats: number, label: string, usage = storageUsage()): GPUBuffer {
    const size = Math.max(16, Math.ceil(floats * 4 / 16) * 16);
    this.bytes += size;
    const b = this.device.createBuffer({ size, usage, label });
    this.buffers.push(b);
    return b;
  }

  /** Pipelines on the device so far (every engine's). */
  get pipelines(): number {
    return this.#pipelines.size;
  }

  /**
   * The plan on the device; its values go to `options.reuse`'s buffers where they fit (largest
   * first), else to new buffers; `options.params` replaces the parameter buffer (the EMA's, to
   * sample with the average).
   */
  compile(
    plan: Plan,
    name: string,
    options: { reuse?: readonly GPUBuffer[]; params?: GPUBuffer } = {},
  ): CompiledPlan {
    const reuse = options.reuse ?? [];
    const state = { ...this.state, ...(options.params ? { params: options.params } : {}) };
    const input = this.buffer(plan.input.floats, `${name} input`);
    const free = [...reuse].sort((a, b) => b.size - a.size);
    const slots: GPUBuffer[] = [];
    const floats = plan.memory.slotFloats;
    const order = floats.map((_, i) => i).sort((a, b) => floats[b] - floats[a]);
    for (const i of order) {
      slots[i] = free.length > 0 && free[0].size >= floats[i] * 4
        ? free.shift()!
        : this.buffer(floats[i], `${name} value ${i}`);
    }
    const resolve = (ref: Ref, length: number): GPUBufferBinding => {
      if ("value" in ref) {
        return { buffer: slots[plan.memory.slotOf[ref.value]], offset: 0, size: length * 4 };
      }
      const target = ref.state === "input" ? input : state[ref.state];
      if (!target) throw new Error(`engine: no ${ref.state} buffer`);
      return { buffer: target, offset: ref.offset * 4, size: length * 4 };
    };
    const limit = this.device.limits.maxStorageBufferBindingSize;
    const commands = plan.dispatches.map((d): Command => {
      d.spec.bindings.forEach((b) => {
        if (b.length * 4 > limit) {
          throw new RangeError(
            `engine: ${d.spec.name} binds ${b.length * 4} bytes as ${b.name}, past the device's ` +
              `maxStorageBufferBindingSize ${limit} (a smaller batch fits)`,
          );
        }
      });
      const { layout, pipeline } = this.#pipeline(d.spec.name, d.spec.code, d.spec.bindings);
      const bindGroup = this.device.createBindGroup({
        label: d.spec.name,
        layout,
        entries: d.refs.map((r, i) => ({
          binding: i,
          resource: resolve(r, d.spec.bindings[i].length),
        })),
      });
      const [x, y, z] = d.spec.workgroups;
      return { pipeline, bindGroup, x, y, z };
    });
    const out = resolve(plan.output, plan.outputFloats);
    const host = new Float32Array(plan.input.floats);
    return {
      plan,
      input,
      host,
      hostU32: new Uint32Array(host.buffer),
      slots,
      commands,
      output: { buffer: out.buffer, offset: out.offset ?? 0 },
    };
  }

  #pipeline(
    name: string,
    code: string,
    bindings: readonly Binding[],
  ): { layout: GPUBindGroupLayout; pipeline: GPUComputePipeline } {
    const signature = bindings.map((b) => b.access === "read" ? "r" : "w").join("");
    let layout = this.#layouts.get(signature);
    if (!layout) {
      layout = this.device.createBindGroupLayout({
        entries: bindings.map((b, i) => ({
          binding: i,
          visibility: GPUShaderStage.COMPUTE,
          buffer: { type: b.access === "read" ? "read-only-storage" : "storage" },
        })),
      });
      this.#layouts.set(signature, layout);
    }
    const key = `${signature}\n${code}`;
    let pipeline = this.#pipelines.get(key);
    if (!pipeline) {
      pipeline = this.device.createComputePipeline({
        label: name,
        layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
        compute: {
          module: this.device.createShaderModule({ code, label: name }),
          entryPoint: "main",
        },
      });
      this.#pipelines.set(key, pipeline);
    }
    return { layout, pipeline };
  }
}
