/**
 * The trajectory figure (seed 002's "six diffusion processes"): which states of the reverse
 * process to keep, and a recorder that copies them out of the sampler as it runs.
 * @module
 */
import type { TrajectoryConfig } from "../../schemas/experiment.ts";
import type { tf } from "../tf.ts";

/** Which t each figure shows, in the order of the reverse process (x_T first). */
export interface TrajectoryPlan {
  /** Columns of the strip PNG. */
  strip: number[];
  /** Frames of the GIF (empty when gifFrames is 0). */
  gif: number[];
}

/** `n` states evenly spaced over `visited` (first and last included), without repeats. */
export function evenlySpaced(visited: readonly number[], n: number): number[] {
  if (n <= 0 || visited.length === 0) return [];
  if (n === 1) return [visited[visited.length - 1]];
  const out: number[] = [];
  for (let k = 0; k < n; k++) {
    const t = visited[Math.round((k * (visited.length - 1)) / (n - 1))];
    if (out[out.length - 1] !== t) out.push(t);
  }
  return out;
}

/**
 * The states to keep, given the t of every state the sampler visits (descending, x_T first,
 * from `visitedTimesteps`): `frames` evenly spaced ones, or for each t of `at` the first visited
 * state at or below it; and `gifFrames` evenly spaced ones for the GIF.
 */
export function trajectoryPlan(
  visited: readonly number[],
  config: Pick<TrajectoryConfig, "frames" | "gifFrames"> & Partial<Pick<TrajectoryConfig, "at">>,
): TrajectoryPlan {
  let strip: number[];
  if (config.at) {
    strip = config.at.map((a) => visited.find((t) => t <= a) ?? visited[visited.length - 1]);
  } else {
    strip = evenlySpaced(visited, config.frames);
  }
  return { strip, gif: evenlySpaced(visited, config.gifFrames) };
}

/**
 * Copies the first `count` samples of the states a {@link TrajectoryPlan} names while the
 * sampler runs: pass `record` as both `onStart` and `onStep`.
 */
export class TrajectoryRecorder {
  #wanted: Set<number>;
  #count: number;
  #states = new Map<number, Float32Array>();
  #plan: TrajectoryPlan;

  /** Records the states of `plan`, keeping the first `count` samples of each. */
  constructor(plan: TrajectoryPlan, options: { count: number }) {
    this.#plan = plan;
    this.#wanted = new Set([...plan.strip, ...plan.gif]);
    this.#count = options.count;
  }

  /** The sampler callback: keeps x when t is wanted. */
  record = async (t: number, x: tf.Tensor4D): Promise<void> => {
    if (!this.#wanted.has(t) || this.#states.has(t)) return;
    const per = x.size / x.shape[0];
    const data = (await x.data()) as Float32Array;
    this.#states.set(t, data.slice(0, Math.min(this.#count, x.shape[0]) * per));
  };

  /** The t of each state of the strip, in plan order. */
  get stripTimesteps(): readonly number[] {
    return this.#plan.strip;
  }

  /** The kept states of the strip, in plan order ([count, H, W, C] values each). */
  strip(): Float32Array[] {
    return this.#plan.strip.map((t) => this.#state(t));
  }

  /** The kept states of the GIF, in plan order. */
  gif(): Float32Array[] {
    return this.#plan.gif.map((t) => this.#state(t));
  }

  #state(t: number): Float32Array {
    const s = this.#states.get(t);
    if (!s) throw new Error(`trajectory: the sampler never reached t = ${t}`);
    return s;
  }
}
