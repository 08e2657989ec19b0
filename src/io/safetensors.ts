/**
 * The safetensors format (an 8-byte little-endian header length, a JSON header, raw
 * little-endian data), used for checkpoints and test fixtures so that weights can be read by
 * PyTorch and other tools. Only float32 tensors are written; F32 and I32 are read.
 * @module
 */

/** One tensor: its shape and float32 values in row-major order. */
export interface NamedArray {
  /** The tensor's shape. */
  shape: number[];
  /** The values, row-major. */
  data: Float32Array;
}

/**
 * The 4-D array `a` with its axes reordered: axis k of the result is axis `perm[k]` of `a`
 * (e.g. `[2, 3, 1, 0]` turns PyTorch's OIHW conv weights into tfjs's HWIO, `[3, 2, 0, 1]` back).
 */
export function permute4(
  a: NamedArray,
  perm: readonly [number, number, number, number],
): NamedArray {
  const shape = perm.map((p) => a.shape[p]);
  const strides = [a.shape[1] * a.shape[2] * a.shape[3], a.shape[2] * a.shape[3], a.shape[3], 1];
  const [s0, s1, s2, s3] = perm.map((p) => strides[p]);
  const data = new Float32Array(a.data.length);
  let k = 0;
  for (let i0 = 0; i0 < shape[0]; i0++) {
    for (let i1 = 0; i1 < shape[1]; i1++) {
      for (let i2 = 0; i2 < shape[2]; i2++) {
        const base = i0 * s0 + i1 * s1 + i2 * s2;
        for (let i3 = 0; i3 < shape[3]; i3++) data[k++] = a.data[base + i3 * s3];
      }
    }
  }
  return { shape, data };
}

/** Encodes named float32 tensors (in insertion order) and optional string metadata. */
export function encodeSafetensors(
  tensors: Map<string, NamedArray>,
  options: { metadata?: Record<string, string> } = {},
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (options.metadata) header.__metadata__ = options.metadata;
  let offset = 0;
  for (const [name, t] of tensors) {
    const size = t.shape.reduce((a, b) => a * b, 1);
    if (size !== t.data.length) {
      throw new Error(`safetensors: ${name} has shape [${t.shape}] but ${t.data.length} values`);
    }
    header[name] = { dtype: "F32", shape: t.shape, data_offsets: [offset, offset + 4 * size] };
    offset += 4 * size;
  }
  let headText = JSON.stringify(header);
  headText += " ".repeat((8 - (headText.length % 8)) % 8);
  const head = new TextEncoder().encode(headText);
  const out = new Uint8Array(8 + head.length + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let pos = 8 + head.length;
  for (const t of tensors.values()) {
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    out.set(bytes, pos);
    pos += bytes.length;
  }
  return out;
}

/** The result of {@link decodeSafetensors}. */
export interface DecodedSafetensors {
  /** The tensors in file order, as float32. */
  tensors: Map<string, NamedArray>;
  /** The `__metadata__` entry, if any. */
  metadata: Record<string, string>;
}

/** Decodes a safetensors file; throws a descriptive error on a truncated or malformed one. */
export function decodeSafetensors(bytes: Uint8Array): DecodedSafetensors {
  if (bytes.length < 8) throw new Error("safetensors: file shorter than its 8-byte header length");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headLength = Number(view.getBigUint64(0, true));
  if (8 + headLength > bytes.length) throw new Error("safetensors: truncated header");
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headLength))) as Record<
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] }
  >;
  const base = 8 + headLength;
  const tensors = new Map<string, NamedArray>();
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") {
      metadata = entry as unknown as Record<string, string>;
      continue;
    }
    const [start, end] = entry.data_offsets;
    if (base + end > bytes.length) throw new Error(`safetensors: ${name} is truncated`);
    const size = entry.shape.reduce((a, b) => a * b, 1);
    const raw = bytes.slice(base + start, base + end);
    let data: Float32Array;
    if (entry.dtype === "F32") data = new Float32Array(raw.buffer, 0, size);
    else if (entry.dtype === "I32") data = Float32Array.from(new Int32Array(raw.buffer, 0, size));
    else throw new Error(`safetensors: ${name} has unsupported dtype ${entry.dtype}`);
    tensors.set(name, { shape: entry.shape, data });
  }
  return { tensors, metadata };
}
