/**
 * The process's peak resident memory, for the manifest summary: the kernel's high-water mark
 * (`VmHWM` of /proc/self/status on Linux), which counts every thread (the gradient workers, ONNX
 * Runtime) and the wasm heaps, which only grow.
 * @module
 */

/** `VmHWM` (kB) of a /proc/<pid>/status text, in MiB with one decimal; null when absent. */
export function parseHighWaterMark(status: string): number | null {
  const match = /^VmHWM:\s+(\d+)\s+kB/m.exec(status);
  return match ? +(Number(match[1]) / 1024).toFixed(1) : null;
}

/**
 * The peak resident set size of this process so far, in MiB: `VmHWM` where /proc has it, else
 * the current RSS (a lower bound), else null.
 */
export function peakRssMiB(): number | null {
  try {
    const peak = parseHighWaterMark(Deno.readTextFileSync("/proc/self/status"));
    if (peak !== null) return peak;
  } catch {
    // not Linux
  }
  try {
    return +(Deno.memoryUsage().rss / 2 ** 20).toFixed(1);
  } catch {
    return null;
  }
}
