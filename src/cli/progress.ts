/**
 * Progress bars of `deno task run` and `deno task sample` in a terminal (cli-progress): one bar
 * per phase (decoding, training, sampling, evaluation) with count/total, the rate, the ETA and,
 * while training, the epoch and the loss (named). Log lines print above the bars. When stdout is
 * not a terminal the command line uses no reporter and the runner prints plain lines instead.
 * @module
 */
// @ts-types="@types/cli-progress"
import cliProgress from "cli-progress";
import process from "node:process";
import type { ProgressDetail, ProgressPhase, ProgressReporter } from "../run/types.ts";
import { formatDuration, LOSS_NAME } from "../run/logs.ts";

const LABELS: Record<ProgressPhase, { label: string; unit: string }> = {
  data: { label: "decoding", unit: "images" },
  train: { label: "training", unit: "steps" },
  sample: { label: "sampling", unit: "steps" },
  evaluate: { label: "evaluating", unit: "images" },
};

/**
 * The payload of one bar update: the rate (images/s, or s/step for steps), the ETA and the
 * training detail, as text.
 */
export function progressText(
  phase: ProgressPhase,
  state: { done: number; total: number; seconds: number; detail?: ProgressDetail },
): { rate: string; remaining: string; detail: string } {
  const { done, total, seconds, detail } = state;
  const unit = LABELS[phase].unit;
  const perSecond = seconds > 0 ? done / seconds : 0;
  const rate = unit === "steps"
    ? `${done > 0 ? (seconds / done).toFixed(2) : "?"} s/step`
    : `${perSecond.toFixed(0)} ${unit}/s`;
  const remaining = perSecond > 0 ? formatDuration((total - done) / perSecond) : "?";
  const parts: string[] = [];
  if (detail?.epoch !== undefined) {
    parts.push(`epoch ${detail.epoch}${detail.epochs ? `/${detail.epochs}` : ""}`);
  }
  if (detail?.loss !== undefined && detail.loss !== null) {
    parts.push(`loss ${detail.loss.toFixed(4)} (${LOSS_NAME})`);
  }
  return { rate, remaining, detail: parts.length ? `  ${parts.join("  ")}` : "" };
}

function newBars(): cliProgress.MultiBar {
  return new cliProgress.MultiBar({
    format: "{label} [{bar}] {value}/{total} {unit}{detail}  {rate}  ETA {remaining}",
    stream: process.stdout,
    hideCursor: true,
    clearOnComplete: false,
    barsize: 24,
  }, cliProgress.Presets.shades_classic);
}

/** Progress bars on stdout, one per phase, with log lines printed above them. */
export class TerminalProgress implements ProgressReporter {
  #bars = newBars();
  #current: {
    phase: ProgressPhase;
    bar: cliProgress.SingleBar;
    start: number;
    from: number;
  } | null = null;

  /** Prints `line` above the bars. */
  log = (line: string): void => {
    if (this.#current) this.#bars.log(line + "\n");
    else console.log(line);
  };

  /** Starts a bar for a new phase (or a new total) and updates it. */
  update(phase: ProgressPhase, done: number, total: number, detail?: ProgressDetail): void {
    // A cache hit reports everything done at once: nothing to show.
    if (!this.#current && phase === "data" && done >= total) return;
    if (!this.#current || this.#current.phase !== phase || this.#current.bar.getTotal() !== total) {
      this.#current = {
        phase,
        bar: this.#bars.create(total, 0, {
          ...LABELS[phase],
          rate: "",
          remaining: "?",
          detail: "",
        }),
        start: performance.now(),
        from: done,
      };
    }
    // Rates count from the first update (the work before it was not timed).
    const { start, from } = this.#current;
    const seconds = (performance.now() - start) / 1000;
    const text = progressText(phase, { done: done - from, total: total - from, seconds, detail });
    this.#current.bar.update(done, text);
    if (done >= total) this.stop();
  }

  /** Draws the bars a last time and gives the terminal back. */
  stop(): void {
    if (!this.#current) return;
    this.#bars.stop();
    this.#bars = newBars();
    this.#current = null;
  }
}
