/**
 * The memory plan: which device buffer holds each intermediate value of a step. A value lives
 * from the first dispatch that binds it to the last; values whose lives do not overlap share a
 * buffer. Each value gets a buffer of its own for its life (never a sub-range of a shared
 * arena), because WebGPU forbids binding one buffer both read-only and writable in one
 * dispatch: two values bound by one dispatch are both alive there, so they are always in
 * different buffers.
 *
 * The assignment is greedy in dispatch order: a value takes the free buffer whose size fits it
 * most tightly, else grows the largest free one, else opens a new one. Pure: no device here.
 * @module
 */
import { alignFloats } from "./layout.ts";

/** What the planner knows of one value. */
export interface ValueLife {
  /** Floats the value needs. */
  floats: number;
  /** Index of the first dispatch that binds it. */
  first: number;
  /** Index of the last dispatch that binds it. */
  last: number;
}

/** The assignment of values to buffers. */
export interface MemoryPlan {
  /** Buffer index of each value (-1: never bound). */
  slotOf: Int32Array;
  /** Floats of each buffer (aligned to 64). */
  slotFloats: number[];
  /** Bytes of all buffers together. */
  bytes: number;
  /** Largest number of bytes alive at one dispatch (the lower bound of `bytes`). */
  liveBytes: number;
}

/** Assigns the values (`first` < 0: never bound) to shared buffers by liveness. */
export function planMemory(values: readonly ValueLife[]): MemoryPlan {
  const slotOf = new Int32Array(values.length).fill(-1);
  const slotFloats: number[] = [];
  const order = values.map((_, i) => i).filter((i) => values[i].first >= 0);
  order.sort((a, b) => values[a].first - values[b].first || a - b);
  // Slots in use, with the dispatch after which each becomes free.
  const busyUntil: number[] = [];
  const free = new Set<number>();
  // Releases in order of `last`: a min-heap would do, the lists here are short.
  const pending: number[] = [];
  let live = 0;
  let liveMax = 0;
  for (const v of order) {
    const { first, last } = values[v];
    for (let k = pending.length - 1; k >= 0; k--) {
      const s = pending[k];
      if (busyUntil[s] < first) {
        free.add(s);
        pending.splice(k, 1);
      }
    }
    const need = alignFloats(Math.max(values[v].floats, 1));
    let best = -1;
    for (const s of free) {
      if (slotFloats[s] >= need && (best < 0 || slotFloats[s] < slotFloats[best])) best = s;
    }
    if (best < 0) {
      for (const s of free) if (best < 0 || slotFloats[s] > slotFloats[best]) best = s;
      if (best >= 0) slotFloats[best] = need;
    }
    if (best < 0) {
      best = slotFloats.length;
      slotFloats.push(need);
    }
    free.delete(best);
    busyUntil[best] = last;
    pending.push(best);
    slotOf[v] = best;
  }
  // The largest live total, dispatch by dispatch.
  const events: [number, number][] = [];
  for (const v of order) {
    const b = alignFloats(Math.max(values[v].floats, 1)) * 4;
    events.push([values[v].first, b], [values[v].last + 0.5, -b]);
  }
  events.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  for (const [, d] of events) {
    live += d;
    liveMax = Math.max(liveMax, live);
  }
  return {
    slotOf,
    slotFloats,
    bytes: slotFloats.reduce((a, b) => a + b, 0) * 4,
    liveBytes: liveMax,
  };
}
