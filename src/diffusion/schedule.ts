/**
 * The `schedule` section: the forward-process variances β_1..β_T and the quantities derived from
 * them, computed in float64. Index i = 0..T-1 stands for the paper's t = i + 1, as in the course
 * notebook (which trains and samples with 0-based t).
 * @module
 */
import type { ScheduleConfig } from "../../schemas/experiment.ts";

/** A noise schedule and its derived per-step quantities (float64, index 0..T-1). */
export interface Schedule {
  /** T. */
  timesteps: number;
  /** β_t. */
  betas: Float64Array;
  /** α_t = 1 - β_t. */
  alphas: Float64Array;
  /** ᾱ_t = ∏_{s<=t} α_s. */
  alphaBars: Float64Array;
  /** ᾱ_{t-1}, with ᾱ_{-1} = 1. */
  alphaBarsPrev: Float64Array;
  /** β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t), the variance of q(x_{t-1} | x_t, x_0). */
  posteriorVariance: Float64Array;
}

/** The betas a schedule section describes. */
export function scheduleBetas(config: ScheduleConfig): Float64Array {
  const T = config.timesteps;
  const betas = new Float64Array(T);
  for (let i = 0; i < T; i++) {
    // torch.linspace(betaStart, betaEnd, T)
    betas[i] = T === 1
      ? config.betaStart
      : config.betaStart + (config.betaEnd - config.betaStart) * (i / (T - 1));
  }
  return betas;
}

/** Derives ᾱ, β̃ and the rest from betas. */
export function scheduleFromBetas(betas: Float64Array): Schedule {
  const T = betas.length;
  const alphas = new Float64Array(T);
  const alphaBars = new Float64Array(T);
  const alphaBarsPrev = new Float64Array(T);
  const posteriorVariance = new Float64Array(T);
  let prod = 1;
  for (let i = 0; i < T; i++) {
    alphas[i] = 1 - betas[i];
    alphaBarsPrev[i] = prod;
    prod *= alphas[i];
    alphaBars[i] = prod;
    posteriorVariance[i] = (betas[i] * (1 - alphaBarsPrev[i])) / (1 - alphaBars[i]);
  }
  return { timesteps: T, betas, alphas, alphaBars, alphaBarsPrev, posteriorVariance };
}

/** The schedule a `schedule` section describes. */
export function makeSchedule(config: ScheduleConfig): Schedule {
  return scheduleFromBetas(scheduleBetas(config));
}

/** ᾱ_T and √ᾱ_T: how much of x_0 is left in x_T (x_T is pure noise only when this is near 0). */
export function terminalSignal(schedule: Schedule): { alphaBarT: number; sqrtAlphaBarT: number } {
  const alphaBarT = schedule.alphaBars[schedule.timesteps - 1];
  return { alphaBarT, sqrtAlphaBarT: Math.sqrt(alphaBarT) };
}
