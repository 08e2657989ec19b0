/**
 * The flat layout of the network's state on the device: every parameter tensor at a 64-float
 * (256-byte) aligned offset of one f32 buffer, in state-dict order, the padding between tensors
 * zero. Gradients, both Adam moments and the EMA use the same layout in buffers of their own,
 * so one element-wise dispatch updates all of them, and a tensor is bound as the sub-range
 * `[offset, offset + size)` of its buffer (256 bytes is WebGPU's largest
 * `minStorageBufferOffsetAlignment`, so the offsets are valid on every adapter).
 * @module
 */
import type { NamedArray } from "../../io/safetensors.ts";
import type { ParamSpec } from "../../model/params.ts";

/** Floats per alignment unit: 64 f32 = 256 bytes. */
export const ALIGN_FLOATS = 64;

/** Rounds `n` floats up to the alignment unit. */
export function alignFloats(n: number): number {
  return Math.ceil(n / ALIGN_FLOATS) * ALIGN_FLOATS;
}

/** Where one parameter lives in the flat buffers. */
export interface ParamSlot {
  /** State-dict name. */
  name: string;
  /** Shape (conv HWIO, linear [in, out]). */
  shape: number[];
  /** First float (a multiple of {@link ALIGN_FLOATS}). */
  offset: number;
  /** Number of floats. */
  size: number;
}

/** The flat layout of a parameter list. */
export interface ParamLayout {
  /** Each parameter, in state-dict order. */
  slots: ParamSlot[];
  /** By name. */
  byName: Map<string, ParamSlot>;
  /** Floats of each flat buffer (a multiple of {@link ALIGN_FLOATS}). */
  floats: number;
}

/** Lays `params` out in state-dict order, each tensor at an aligned offset. */
export function paramLayout(params: readonly ParamSpec[]): ParamLayout {
  let offset = 0;
  const slots = params.map((p): ParamSlot => {
    const size = p.shape.reduce((a, b) => a * b, 1);
    const slot = { name: p.name, shape: [...p.shape], offset, size };
    offset += alignFloats(size);
    return slot;
  });
  return {
    slots,
    byName: new Map(slots.map((s) => [s.name, s])),
    floats: Math.max(offset, ALIGN_FLOATS),
  };
}

/**
 * Packs named arrays into one flat buffer of `layout` (padding zero). Every parameter must be
 * present with its shape; `suffix` reads `<name><suffix>` (e.g. `.exp_avg`).
 */
export function packFlat(
  layout: ParamLayout,
  arrays: Map<string, NamedArray>,
  options: { suffix?: string; what?: string } = {},
): Float32Array<ArrayBuffer> {
  const { suffix = "", what = "state" } = options;
  const out = new Float32Array(layout.floats);
  for (const slot of layout.slots) {
    const a = arrays.get(slot.name + suffix);
    if (!a) throw new Error(`${what} has no ${slot.name}${suffix}`);
    if (a.shape.join("x") !== slot.shape.join("x")) {
      throw new Error(
        `${what} ${slot.name}${suffix} has shape [${a.shape}], the network needs [${slot.shape}]`,
      );
    }
    out.set(a.data, slot.offset);
  }
  return out;
}

/** Unpacks a flat buffer of `layout` into named copies (`<name><suffix>`). */
export function unpackFlat(
  layout: ParamLayout,
  flat: Float32Array,
  options: { suffix?: string } = {},
): Map<string, NamedArray> {
  const out = new Map<string, NamedArray>();
  for (const slot of layout.slots) {
    out.set(slot.name + (options.suffix ?? ""), {
      shape: [...slot.shape],
      data: flat.slice(slot.offset, slot.offset + slot.size),
    });
  }
  return out;
}
