/**
 * The WebGPU device of the GPU tests, opened once per test file, and the `ignore` flag of the
 * tests that need it: without an adapter (no `mesa-vulkan-drivers` / `libvulkan1`) they are
 * reported as ignored, never passed (`.ci/run` installs Mesa, so CI runs them on llvmpipe).
 * @module
 */
import { type GpuContext, openGpu } from "../../src/gpu/mod.ts";

/** The open device, or undefined without an adapter (DDPM_SKIP_WEBGPU=1 forces that). */
export const gpu: GpuContext | undefined = Deno.env.get("DDPM_SKIP_WEBGPU") === "1"
  ? undefined
  : await openGpu();

/** `ignore` of the tests that need a device. */
export const noGpu: boolean = gpu === undefined;

/** The device (only call inside a test that is ignored without one). */
export function device(): GPUDevice {
  if (gpu === undefined) throw new Error("no WebGPU adapter");
  return gpu.device;
}

/** Deterministic test data in [-1, 1) (a small LCG, so the tests need no generator state). */
export function testData(length: number, seed = 1): Float32Array<ArrayBuffer> {
  const out = new Float32Array(length);
  let s = seed >>> 0;
  for (let i = 0; i < length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

/** Largest |a - b| relative to max(1, |b|), and where it is. */
export function maxRelError(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
): { error: number; at: number } {
  if (a.length !== b.length) throw new RangeError(`lengths ${a.length} and ${b.length} differ`);
  let error = 0;
  let at = -1;
  for (let i = 0; i < a.length; i++) {
    const e = Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i]));
    if (!(e <= error)) {
      error = e;
      at = i;
    }
  }
  return { error, at };
}

/** Asserts that `actual` equals `expected` within `tolerance` (relative above 1, absolute below). */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tolerance: number,
  what = "values",
): void {
  const { error, at } = maxRelError(actual, expected);
  if (!(error <= tolerance)) {
    throw new Error(
      `${what}: error ${error.toExponential(2)} > ${tolerance} at ${at} ` +
        `(got ${actual[at]}, expected ${expected[at]})`,
    );
  }
}
