/**
 * Progress of a long decode: count, images/s and ETA, as a bar redrawn in place (cli-progress)
 * in a terminal, or as a plain line every few seconds through a log function otherwise.
 * @module
 */
// @ts-types="@types/cli-progress"
import cliProgress from "cli-progress";
import process from "node:process";

/** Options of {@link progressReporter}. */
export interface ProgressOptions {
  /** Where plain lines go (not a terminal). */
  log: (line: string) => void;
  /** Draw a bar on stderr instead of logging lines. */
  terminal?: boolean;
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
  let bar: cliProgress.SingleBar | undefined;
  let first = true;
  return (done, total) => {
    if (first && done >= total) return;
    first = false;
    if (options.terminal) {
      if (!bar) {
        bar = new cliProgress.SingleBar({
          format: `${label} [{bar}] {value}/{total} images, {rate} images/s, ETA {eta_formatted}`,
          stream: process.stderr,
          etaBuffer: 200,
        }, cliProgress.Presets.shades_classic);
        bar.start(total, 0, { rate: "0" });
      }
      const seconds = now() - start;
      bar.update(done, { rate: seconds > 0 ? (done / seconds).toFixed(0) : "0" });
      if (done >= total) bar.stop();
      return;
    }
    const t = now();
    if (done >= total || t - lastLine >= every) {
      lastLine = t;
      options.log(progressLine(label, { done, total, seconds: t - start }));
    }
  };
}
