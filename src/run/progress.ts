/**
 * What a run's long phases tell about how far they are: the caller's progress display, or
 * plain lines every few seconds.
 * @module
 */
import { progressReporter } from "../data/progress.ts";
import type { RunContext } from "./types.ts";

/**
 * The `onProgress(done, total)` of a phase: the reporter's, or plain lines (`loading 3000/12000
 * images, ...`) every few seconds.
 */
export function phaseProgress(
  phase: "data" | "evaluate",
  options: Pick<RunContext, "progress" | "log">,
): (done: number, total: number) => void {
  const { progress } = options;
  if (progress) return (done, total) => progress.update(phase, done, total);
  return progressReporter(phase === "data" ? "  loading" : "  evaluating", { log: options.log });
}
