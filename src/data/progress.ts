/**
 * Progress of a long decode or evaluation as plain lines (count, images/s and ETA) every few
 * seconds through a log function: what a run prints when no progress bar is drawn (the bars
 * of a terminal are `src/cli/progress.ts`).
 * @module
 */

/** Options of {@link progressReporter}. */
export interface ProgressOptions {
  /** Where the lines go. */
  log: (line: string) => void;
  /** Seconds between plain lines; default 5. */
  every?: number;
  /** Clock in seconds (tests); default `performance.now() / 1000`. */
  now?: () => number;
}

/** One plain progress line: `decoding 3000/12000 images, 850 images/s, ETA 11 s`. */
export function progressLine(
  label: string,
  state: { done: number; total: number; seconds: number },
): string {
  const { done, total, seconds } = state;
  const rate = seconds > 0 ? done / seconds : 0;
  const eta = rate > 0 ? Math.ceil((total - done) / rate) : undefined;
  return `${label} ${done}/${total} images, ${rate.toFixed(0)} images/s` +
    (done < total ? `, ETA ${eta === undefined ? "?" : `${eta} s`}` : `, ${seconds.toFixed(1)} s`);
}

/**
 * An `onProgress(done, total)` callback that shows the progress of `label` (see the module
 * documentation); the last call (`done === total`) always prints, unless it is the first call (a
 * cache hit reports all done at once: nothing to show).
 */
export function progressReporter(
  label: string,
  options: ProgressOptions,
): (done: number, total: number) => void {
  const now = options.now ?? (() => performance.now() / 1000);
  const every = options.every ?? 5;
  const start = now();
  let lastLine = start;
  let first = true;
  return (done, total) => {
    if (first && done >= total) return;
    first = false;
    const t = now();
    if (done >= total || t - lastLine >= every) {
      lastLine = t;
      options.log(progressLine(label, { done, total, seconds: t - start }));
    }
  };
}
