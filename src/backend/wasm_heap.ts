/**
 * Low-level access to the tfjs wasm backend for the kernels of `wasm_kernels.ts`: tensor
 * views into the wasm heap (no copy), and XNNPACK's matrix product called directly on them.
 * Every access to the backend's internals goes through here, and only once
 * `./tfjs_internals.ts` has accepted the installed tfjs version.
 *
 * A view is a TensorInfo registered at an offset inside another tensor's memory; it must be
 * released with {@link releaseView}, never with `disposeData` (which would free memory the view
 * does not own). Heap offsets stay valid when the heap grows, but JS typed arrays over it are
 * detached: take them afresh (with {@link heapF32}) after any allocation.
 * @module
 */
import { tf } from "../tf.ts";

/** A TensorInfo of the wasm backend. */
export type Info = tf.TensorInfo;

interface TensorData {
  id: number;
  memoryOffset: number;
  shape: number[];
  dtype: string;
  refCount: number;
}

/** The parts of tfjs' `BackendWasm` (and its emscripten module) used here. */
export interface WasmBackend {
  /** The emscripten module. */
  wasm: {
    HEAPU8: Uint8Array;
    cwrap(name: string, ret: null, args: string[]): (...args: unknown[]) => void;
    tfjs: { disposeData(id: number): void };
  };
  /** dataId -> tensor record (id, heap offset). */
  dataIdMap: { get(dataId: object): TensorData | undefined; delete(dataId: object): void };
  /** Releases a reference; frees the memory at zero references. */
  disposeData(dataId: object, force?: boolean): boolean;
  /** Adds a reference to `dataId`. */
  incRef(dataId: object): void;
  /** A Float32Array (or int view) of a tensor's memory on the heap. */
  typedArrayFromHeap(info: Info): Float32Array | Int32Array | Uint8Array;
  /** Allocates an output (or registers memory at `memoryOffset`). */
  makeOutput(
    shape: number[],
    dtype: "float32",
    memoryOffset?: number,
    values?: Float32Array,
  ): Info;
}

/** The backend's record of a tensor. */
function record(backend: WasmBackend, info: Info): TensorData {
  const data = backend.dataIdMap.get(info.dataId);
  if (data === undefined) throw new Error("wasm: tensor data not found (disposed?)");
  return data;
}

/** The wasm tensor id of `info` (what the C++ kernels take). */
export function tensorId(backend: WasmBackend, info: Info): number {
  return record(backend, info).id;
}

/** The heap byte offset of `info`'s data. */
export function heapOffset(backend: WasmBackend, info: Info): number {
  return record(backend, info).memoryOffset;
}

/** A float32 view of `info`'s memory on the heap (valid until the next allocation). */
export function heapF32(backend: WasmBackend, info: Info): Float32Array {
  return backend.typedArrayFromHeap(info) as Float32Array;
}

/** A Float32Array over the whole wasm heap (take it afresh after any allocation). */
export function wholeHeapF32(backend: WasmBackend): Float32Array {
  return new Float32Array(backend.wasm.HEAPU8.buffer);
}

/** Releases several tensors made by kernels (not views). */
export function dispose(backend: WasmBackend, ...infos: Info[]): void {
  for (const info of infos) backend.disposeData(info.dataId);
}

/** A tensor of `shape` over the memory of `base` starting `offset` elements in. No copy. */
export function view(backend: WasmBackend, base: Info, offset: number, shape: number[]): Info {
  return backend.makeOutput(shape, "float32", heapOffset(backend, base) + 4 * offset);
}

/** Releases views made by {@link view}, leaving the memory they point into alone. */
export function releaseView(backend: WasmBackend, ...views: Info[]): void {
  for (const v of views) {
    const data = backend.dataIdMap.get(v.dataId);
    if (data === undefined) continue;
    // dispose_data in C++ drops the tensor id and any XNNPACK operator cached for it.
    backend.wasm.tfjs.disposeData(data.id);
    backend.dataIdMap.delete(v.dataId);
  }
}

type BatchMatMulFn = (
  aId: number,
  aShape: Uint8Array,
  aRank: number,
  bId: number,
  bShape: Uint8Array,
  bRank: number,
  transposeA: boolean,
  transposeB: boolean,
  outId: number,
) => void;

const matMulFns = new WeakMap<object, BatchMatMulFn>();

function shapeBytes(shape: number[]): Uint8Array {
  return new Uint8Array(new Int32Array(shape).buffer);
}

/**
 * out [M, N] = a [M, K] · b [K, N] with XNNPACK's fully connected operator (the wasm
 * BatchMatMul fast path), writing into `out` (which may be a view). Row-major, no transposes.
 */
export function gemm(
  backend: WasmBackend,
  operands: { a: Info; b: Info; out: Info },
  dims: { m: number; k: number; n: number },
): void {
  let fn = matMulFns.get(backend);
  if (fn === undefined) {
    fn = backend.wasm.cwrap("BatchMatMul", null, [
      "number",
      "array",
      "number",
      "number",
      "array",
      "number",
      "number",
      "number",
      "number",
    ]) as unknown as BatchMatMulFn;
    matMulFns.set(backend, fn);
  }
  const { m, k, n } = dims;
  // XNNPACK's operator is cached on b's tensor id regardless of shape (and reshapes share ids),
  // so b goes in as a fresh view whose release deletes the operator.
  const b = view(backend, operands.b, 0, [k, n]);
  try {
    fn(
      tensorId(backend, operands.a),
      shapeBytes([1, m, k]),
      3,
      tensorId(backend, b),
      shapeBytes([1, k, n]),
      3,
      false,
      false,
      tensorId(backend, operands.out),
    );
  } finally {
    releaseView(backend, b);
  }
}

/** A kernel body of this library: TensorInfos in, TensorInfos out, on the wasm backend. */
export type WasmKernelBody = (
  inputs: tf.NamedTensorInfoMap,
  backend: WasmBackend,
  attrs: tf.NamedAttrMap,
) => Info[];

/** The wasm kernel configs of a fused op and its gradient, by kernel name. */
export function fusedKernelPair(
  names: { forward: string; backward: string },
  bodies: { forward: WasmKernelBody; backward: WasmKernelBody },
): tf.KernelConfig[] {
  const config = (kernelName: string, body: WasmKernelBody): tf.KernelConfig => ({
    kernelName,
    backendName: "wasm",
    kernelFunc: ({ inputs, backend, attrs }) =>
      body(inputs, backend as unknown as WasmBackend, attrs ?? {}),
  });
  return [config(names.forward, bodies.forward), config(names.backward, bodies.backward)];
}

/** Whether kernel `name` of this library runs on the active backend (wasm, and registered). */
export function wasmKernelActive(name: string): boolean {
  return tf.getBackend() === "wasm" && tf.getKernel(name, "wasm") !== undefined;
}
