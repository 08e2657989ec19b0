/**
 * The logs of a training run: `metrics.jsonl` (one line per step, deterministic),
 * `timings.jsonl` (wall-clock seconds at each logged step, kept apart because it changes from
 * run to run) and the progress lines printed every `train.logEvery` steps. A resumed run keeps
 * the lines of the steps its checkpoint covers and appends the rest.
 * @module
 */
import { join } from "node:path";
import { writeFileAtomic } from "../io/files.ts";
import type { StepRecord } from "../train/mod.ts";

/** Steps in the window of the loss that progress lines, the manifest and `runs` show. */
export const LOSS_WINDOW = 50;

/** What that loss is, in words, wherever it is shown. */
export const LOSS_NAME = `mean of last ${LOSS_WINDOW} steps`;

/** The loss numbers a training log adds to the manifest summary. */
export interface LossSummary {
  /**
   * The training loss of the last {@linkcode LOSS_WINDOW} steps, averaged (fewer when fewer
   * ran; steps before a resume count): the loss shown in progress lines and by `runs`.
   */
  lossMean50: number | null;
  /** Loss of the last step, or null when no step ran. */
  finalLoss: number | null;
  /** Smallest loss of any step (including the steps before a resume), or null. */
  minLoss: number | null;
  /** Training seconds, summed over resumes. */
  trainSeconds: number;
}

/** Where a {@linkcode TrainingLog} starts and what it prints. */
export interface TrainingLogOptions {
  /** Steps already done (a resumed run), whose lines are kept. */
  startStep: number;
  /** Steps of the whole run. */
  totalSteps: number;
  /** Epochs of the whole run, for the progress lines. */
  epochs?: number;
  /** Print and time every N steps (`train.logEvery`). */
  logEvery: number;
  /** The summary of the run so far (a resumed run's training time and last losses). */
  previous: Record<string, unknown>;
  /** Where progress lines go. */
  log: (line: string) => void;
}

/** Writes metrics.jsonl and timings.jsonl of a run folder and prints the progress lines. */
export class TrainingLog {
  #metrics: Deno.FsFile;
  #timings: Deno.FsFile;
  #options: TrainingLogOptions;
  #encoder = new TextEncoder();
  #start = performance.now();
  #window = { start: performance.now(), steps: 0 };
  #recent: number[];
  #last: StepRecord | null = null;
  #minLoss: number;

  private constructor(
    files: { metrics: Deno.FsFile; timings: Deno.FsFile; recent: number[]; minLoss: number },
    options: TrainingLogOptions,
  ) {
    this.#metrics = files.metrics;
    this.#timings = files.timings;
    this.#recent = files.recent;
    this.#options = options;
    this.#minLoss = files.minLoss;
  }

  /** Opens the logs of the run folder `dir`, keeping the lines of steps <= `startStep`. */
  static async open(dir: string, options: TrainingLogOptions): Promise<TrainingLog> {
    const metricsPath = join(dir, "metrics.jsonl");
    const kept = options.startStep > 0 ? await keptLines(metricsPath, options.startStep) : "";
    // The steps before a resume count (those of a failed run's last session too, up to its
    // checkpoint, which its manifest summary never got).
    const losses = kept.split("\n").filter((l) => l !== "").map((l) => Number(JSON.parse(l).loss));
    const recent = losses.slice(-LOSS_WINDOW);
    const minLoss = losses.reduce((a, b) => Math.min(a, b), Infinity);
    const metrics = await openLog(metricsPath, options.startStep);
    const timings = await openLog(join(dir, "timings.jsonl"), options.startStep);
    return new TrainingLog({ metrics, timings, recent, minLoss }, options);
  }

  /** The mean loss of the last {@linkcode LOSS_WINDOW} steps, or null before the first step. */
  get recentLoss(): number | null {
    if (this.#recent.length === 0) return null;
    return this.#recent.reduce((a, b) => a + b, 0) / this.#recent.length;
  }

  /** The last step recorded, or null. */
  get last(): StepRecord | null {
    return this.#last;
  }

  /** Records one step: its metrics line, and every `logEvery` steps a timing and a printed line. */
  async record(record: StepRecord): Promise<void> {
    const { step, epoch, loss } = record;
    const { totalSteps, logEvery } = this.#options;
    this.#last = record;
    this.#minLoss = Math.min(this.#minLoss, loss);
    this.#recent.push(loss);
    if (this.#recent.length > LOSS_WINDOW) this.#recent.shift();
    this.#window.steps++;
    await this.#write(this.#metrics, { step, epoch, loss });
    if (step % logEvery !== 0 && step !== totalSteps) return;
    const now = performance.now();
    const perStep = (now - this.#window.start) / 1000 / this.#window.steps;
    await this.#write(this.#timings, { step, seconds: +((now - this.#start) / 1000).toFixed(3) });
    const epochs = this.#options.epochs;
    this.#options.log(
      `step ${step}/${totalSteps}  epoch ${epoch + 1}${epochs ? `/${epochs}` : ""}` +
        `  loss ${this.recentLoss!.toFixed(4)} (${LOSS_NAME})  ${perStep.toFixed(2)} s/step` +
        `  ETA ${formatDuration(perStep * (totalSteps - step))}`,
    );
    this.#window = { start: now, steps: 0 };
  }

  /** The loss numbers and training time for the manifest summary. */
  summary(): LossSummary {
    const previous = this.#options.previous;
    const finalLoss = this.#last?.loss ?? previous.finalLoss ?? null;
    const recent = this.recentLoss ?? previous.lossMean50 ?? null;
    return {
      lossMean50: typeof recent === "number" ? recent : null,
      finalLoss: typeof finalLoss === "number" ? finalLoss : null,
      minLoss: Number.isFinite(this.#minLoss) ? this.#minLoss : null,
      trainSeconds: +(Number(previous.trainSeconds ?? 0) +
        (performance.now() - this.#start) / 1000).toFixed(1),
    };
  }

  /** Closes both files. */
  close(): void {
    this.#metrics.close();
    this.#timings.close();
  }

  async #write(file: Deno.FsFile, line: Record<string, number>): Promise<void> {
    // write() may write part of the buffer (a disk filling up): the rest, or the error, follows.
    let bytes = this.#encoder.encode(JSON.stringify(line) + "\n");
    while (bytes.length > 0) bytes = bytes.subarray(await file.write(bytes));
  }
}

/**
 * The JSON lines of `path` whose step is <= `step` (resume keeps them and appends the rest); a
 * line cut short (the disk filled up while it was written) is dropped.
 */
export async function keptLines(path: string, step: number): Promise<string> {
  let text = "";
  try {
    text = await Deno.readTextFile(path);
  } catch {
    return "";
  }
  const lines = text.split("\n").filter((l) => {
    try {
      return l !== "" && JSON.parse(l).step <= step;
    } catch {
      return false;
    }
  });
  return lines.map((l) => l + "\n").join("");
}

/**
 * Opens (or re-opens, keeping the first `keepUpTo` steps) a JSON-lines file for appending. The
 * kept lines are written atomically, so a failure here never loses them.
 */
async function openLog(path: string, keepUpTo: number): Promise<Deno.FsFile> {
  const kept = keepUpTo > 0 ? await keptLines(path, keepUpTo) : "";
  await writeFileAtomic(path, kept);
  return await Deno.open(path, { append: true });
}

/** `1h05m`, `3m20s` or `42s`; `?` when not finite. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = Math.round(seconds % 60);
  if (h > 0) return `${h}h${String(m).padStart(2, "0")}m`;
  return m > 0 ? `${m}m${String(s).padStart(2, "0")}s` : `${s}s`;
}
