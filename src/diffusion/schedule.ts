/**
 * The `schedule` section: the forward-process variances β_1..β_T and the quantities derived from
 * them, computed in float64. Index i = 0..T-1 stands for the paper's t = i + 1, as in the course
 * notebook (which trains and samples with 0-based t).
 *
 * Kinds (betas as the common reference code computes them):
 * - `linear`: linspace(β_start, β_end, T) (Ho et al.); with `scaleWithT` both ends are first
 *   multiplied by 1000 / T (Nichol & Dhariwal's `get_named_beta_schedule("linear")`).
 * - `quadratic`: linspace(√β_start, √β_end, T)².
 * - `sigmoid`: sigmoid(linspace(-6, 6, T)) · (β_end - β_start) + β_start.
 * - `cosine` (Nichol & Dhariwal): ᾱ(t) = f(t) / f(0), f(t) = cos²((t / T + s) / (1 + s) · π / 2),
 *   β_t = min(1 - ᾱ(t) / ᾱ(t - 1), maxBeta).
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

/** torch.linspace(start, end, n) in float64 (n = 1 gives [start]). */
function linspace(start: number, end: number, n: number): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = n === 1 ? start : start + (end - start) * (i / (n - 1));
  return out;
}

/** The cosine schedule's ᾱ(t) for continuous t in [0, T]: f(t) / f(0). */
export function cosineAlphaBar(t: number, options: { timesteps: number; s: number }): number {
  const f = (u: number) =>
    Math.cos(((u / options.timesteps + options.s) / (1 + options.s)) * Math.PI / 2) ** 2;
  return f(t) / f(0);
}

/** β_start and β_end after the optional 1000 / T scaling of a linear schedule. */
export function betaRange(config: ScheduleConfig): { start: number; end: number } {
  if (config.kind === "cosine") throw new RangeError("a cosine schedule has no beta range");
  const scale = config.kind === "linear" && config.scaleWithT ? 1000 / config.timesteps : 1;
  return { start: config.betaStart * scale, end: config.betaEnd * scale };
}

/** The betas a schedule section describes. */
export function scheduleBetas(config: ScheduleConfig): Float64Array {
  const T = config.timesteps;
  switch (config.kind) {
    case "linear": {
      const { start, end } = betaRange(config);
      return linspace(start, end, T);
    }
    case "quadratic": {
      const { start, end } = betaRange(config);
      return linspace(Math.sqrt(start), Math.sqrt(end), T).map((v) => v * v);
    }
    case "sigmoid": {
      const { start, end } = betaRange(config);
      return linspace(-6, 6, T).map((v) => (1 / (1 + Math.exp(-v))) * (end - start) + start);
    }
    case "cosine": {
      const betas = new Float64Array(T);
      const options = { timesteps: T, s: config.s };
      for (let i = 0; i < T; i++) {
        const ratio = cosineAlphaBar(i + 1, options) / cosineAlphaBar(i, options);
        betas[i] = Math.min(1 - ratio, config.maxBeta);
      }
      return betas;
    }
  }
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

/** A one-line description of a schedule section, e.g. `cosine, T=1000, s 0.008`. */
export function describeSchedule(config: ScheduleConfig): string {
  const head = `${config.kind}, T=${config.timesteps}`;
  if (config.kind === "cosine") return `${head}, s ${config.s}, betas clipped at ${config.maxBeta}`;
  const scaled = config.kind === "linear" && config.scaleWithT ? " (scaled by 1000/T)" : "";
  return `${head}, beta ${config.betaStart} -> ${config.betaEnd}${scaled}`;
}
