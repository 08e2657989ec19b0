/**
 * Seeded random streams. Every random draw of a run (weight init, data order, flips, t, noise,
 * sampling noise) comes from an {@link Rng} derived from the experiment seed and a stream name,
 * so that changing one part of an experiment never shifts the draws of another.
 *
 * Generator: xoshiro128** (Blackman & Vigna), 128 bits of state, seeded through SplitMix32 from
 * a 32-bit FNV-1a hash of `"<seed>/<stream>"`. Normals use the Box-Muller transform.
 * @module
 */

/** The four 32-bit words of a generator's state; enough to resume it exactly. */
export type RngState = [number, number, number, number];

function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

function splitmix32(state: { s: number }): number {
  state.s = (state.s + 0x9e3779b9) >>> 0;
  let z = state.s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

/** A seeded xoshiro128** generator with uniform, integer and normal draws. */
export class Rng {
  #s: Uint32Array;

  /** Creates a generator from a full state (see {@link deriveRng} to start one from a seed). */
  constructor(state: RngState) {
    this.#s = Uint32Array.from(state);
    if (state.every((w) => w === 0)) this.#s[0] = 1;
  }

  /** The current state; `new Rng(rng.state())` continues the same sequence. */
  state(): RngState {
    return [this.#s[0], this.#s[1], this.#s[2], this.#s[3]];
  }

  /** The next 32-bit unsigned integer. */
  nextUint32(): number {
    const s = this.#s;
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** A uniform float in [0, 1) with 53 random bits. */
  uniform(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** A uniform integer in [0, n), without modulo bias. */
  int(n: number): number {
    if (!(n >= 1) || n > 0x100000000) {
      throw new RangeError(`Rng.int: n must be in [1, 2^32], got ${n}`);
    }
    const limit = 0x100000000 - (0x100000000 % n);
    let x: number;
    do x = this.nextUint32(); while (x >= limit);
    return x % n;
  }

  /** Fills `out` with independent standard normal draws (Box-Muller) and returns it. */
  fillNormal(out: Float32Array): Float32Array {
    for (let i = 0; i < out.length; i += 2) {
      let u1 = this.uniform();
      while (u1 <= 0) u1 = this.uniform();
      const u2 = this.uniform();
      const r = Math.sqrt(-2 * Math.log(u1));
      out[i] = r * Math.cos(2 * Math.PI * u2);
      if (i + 1 < out.length) out[i + 1] = r * Math.sin(2 * Math.PI * u2);
    }
    return out;
  }

  /** `n` standard normal draws. */
  normal(n: number): Float32Array {
    return this.fillNormal(new Float32Array(n));
  }

  /** Fills `out` with uniform draws in [low, high) and returns it. */
  fillUniform(out: Float32Array, low: number, high: number): Float32Array {
    for (let i = 0; i < out.length; i++) out[i] = low + (high - low) * this.uniform();
    return out;
  }

  /** A permutation of 0..n-1 (Fisher-Yates). */
  permutation(n: number): Int32Array {
    const p = new Int32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = p[i];
      p[i] = p[j];
      p[j] = tmp;
    }
    return p;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** The generator of stream `stream` of experiment seed `seed` (e.g. `deriveRng(0, "train/noise")`). */
export function deriveRng(seed: number, stream: string): Rng {
  const sm = { s: fnv1a(`${seed}/${stream}`) };
  return new Rng([splitmix32(sm), splitmix32(sm), splitmix32(sm), splitmix32(sm)]);
}
