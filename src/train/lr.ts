/**
 * The learning-rate schedule of the `optimizer` section: linear warmup, then a constant rate or
 * a cosine decay. Pure: the rate of step k depends on k and the config only.
 * @module
 */
import type { OptimizerConfig } from "../../schemas/experiment.ts";

/** What {@link learningRate} reads: the optimizer section's rate fields and the step count. */
export type LrOptions = Pick<OptimizerConfig, "lr" | "warmupSteps" | "lrDecay" | "minLr"> & {
  /** Total optimizer steps of the run (where the cosine decay reaches minLr). */
  totalSteps: number;
};

/**
 * The learning rate of optimizer step `step` (1-based, the step about to be applied):
 * lr · step / warmupSteps while step < warmupSteps; then lr (`lrDecay: "none"`), or
 * minLr + (lr - minLr) · (1 + cos(π p)) / 2 with p = (step - warmupSteps) /
 * (totalSteps - warmupSteps) clamped to [0, 1] (`"cosine"`: lr at the end of warmup, minLr at
 * the last step).
 */
export function learningRate(step: number, options: LrOptions): number {
  const { lr, warmupSteps, lrDecay, minLr, totalSteps } = options;
  if (warmupSteps > 0 && step < warmupSteps) return (lr * step) / warmupSteps;
  if (lrDecay === "none") return lr;
  const span = totalSteps - warmupSteps;
  const p = span <= 0 ? 1 : Math.min(1, Math.max(0, (step - warmupSteps) / span));
  return minLr + ((lr - minLr) * (1 + Math.cos(Math.PI * p))) / 2;
}
