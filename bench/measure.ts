/**
 * Timing and memory helpers of the benchmark: repeated timings with their median, min and max,
 * and the process's peak resident set size (Linux `/proc/self/status`, all threads and workers).
 * @module
 */

/** Median, min and max of repeated timings, in seconds. */
export interface Timing {
  /** Median of the timed repetitions. */
  median: number;
  /** Fastest repetition. */
  min: number;
  /** Slowest repetition. */
  max: number;
  /** Number of timed repetitions. */
  n: number;
  /** Every timed repetition, in order. */
  raw: number[];
}

/** Summarises repetition times (seconds) as median, min and max. */
export function summarise(times: number[]): Timing {
  const sorted = [...times].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { median, min: sorted[0], max: sorted[sorted.length - 1], n: times.length, raw: times };
}

/** Runs `fn` `warmup` times untimed, then `reps` times timed; returns the timings. */
export async function timeRepeated(
  fn: () => unknown | Promise<unknown>,
  options: { warmup: number; reps: number },
): Promise<Timing> {
  for (let i = 0; i < options.warmup; i++) await fn();
  const times: number[] = [];
  for (let i = 0; i < options.reps; i++) {
    const start = performance.now();
    await fn();
    times.push((performance.now() - start) / 1000);
  }
  return summarise(times);
}

function statusField(field: string): number | undefined {
  try {
    const text = Deno.readTextFileSync("/proc/self/status");
    const match = text.match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"));
    return match ? Number(match[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** The peak resident set size of the process so far in bytes (VmHWM), or the current RSS. */
export function peakRss(): number {
  return statusField("VmHWM") ?? Deno.memoryUsage().rss;
}

/** The current resident set size in bytes. */
export function currentRss(): number {
  return statusField("VmRSS") ?? Deno.memoryUsage().rss;
}

/**
 * Resets the peak RSS to the current RSS (`echo 5 > /proc/self/clear_refs`), so that the next
 * {@link peakRss} is the peak of what follows. Returns false where the kernel does not allow it.
 */
export function resetPeakRss(): boolean {
  try {
    Deno.writeTextFileSync("/proc/self/clear_refs", "5");
    return true;
  } catch {
    return false;
  }
}

/** Formats bytes as MB with no decimals. */
export function megabytes(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(0)} MB`;
}
