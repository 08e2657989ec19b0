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
