/**
 * FID and KID on synthetic feature vectors: known values, symmetry, growth with noise, and the
 * unbiasedness of KID.
 */
import assert from "node:assert/strict";
import {
  featureStats,
  fid,
  frechetDistance,
  kid,
  kidSubsetSize,
  meanPairwiseDistance,
} from "../src/eval/metrics.ts";
import { deriveRng } from "../src/rng.ts";

/** `n` Gaussian vectors of `dims` with per-dimension mean and standard deviation. */
function gaussian(
  stream: string,
  options: { n: number; dims: number; mean?: (j: number) => number; std?: (j: number) => number },
): Float32Array {
  const { n, dims } = options;
  const z = deriveRng(1, stream).normal(n * dims);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < dims; j++) {
      z[i * dims + j] = (options.mean?.(j) ?? 0) + (options.std?.(j) ?? 1) * z[i * dims + j];
    }
  }
  return z;
}

/** Correlated features (a random linear map of Gaussians), like a network's. */
function correlated(stream: string, n: number, dims: number): Float32Array {
  const z = gaussian(stream, { n, dims });
  const w = deriveRng(2, "mix").normal(dims * dims);
  const out = new Float32Array(n * dims);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < dims; j++) {
      let s = 0;
      for (let k = 0; k < dims; k++) s += z[i * dims + k] * w[k * dims + j];
      out[i * dims + j] = Math.abs(s) / 4; // non-negative, like pooled ReLU outputs
    }
  }
  return out;
}

function addNoise(x: Float32Array, sigma: number, stream: string): Float32Array {
  const noise = deriveRng(3, stream).normal(x.length);
  return x.map((v, i) => v + sigma * noise[i]);
}

Deno.test("FID of a set against itself is 0 (both trace routes)", () => {
  for (const [n, dims] of [[40, 64], [120, 24]]) {
    const x = correlated(`self-${n}`, n, dims);
    const stats = featureStats(x, dims);
    let trace = 0;
    for (let j = 0; j < dims; j++) trace += stats.cov[j * dims + j];
    const value = fid(x, x, { dims });
    assert.ok(value <= 1e-6 * trace, `FID(x, x) = ${value}, trace ${trace}`);
  }
});

Deno.test("FID is symmetric, and the two trace routes agree", () => {
  const dims = 48;
  const a = correlated("sym-a", 30, dims);
  const b = addNoise(correlated("sym-b", 30, dims), 0.3, "sym");
  const ab = fid(a, b, { dims });
  const ba = fid(b, a, { dims });
  assert.ok(ab > 0.1, `FID ${ab}`);
  assert.ok(Math.abs(ab - ba) <= 1e-9 * ab, `${ab} vs ${ba}`);
  // n < dims: fid() uses the nuclear-norm form; frechetDistance() the eigen-decompositions
  const viaStats = frechetDistance(featureStats(a, dims), featureStats(b, dims));
  assert.ok(Math.abs(ab - viaStats) <= 1e-8 * ab, `${ab} vs ${viaStats}`);
});

Deno.test("Fréchet distance of diagonal Gaussians equals its closed form", () => {
  const dims = 5;
  const mean1 = Float64Array.from([0, 1, 2, -1, 0.5]);
  const mean2 = Float64Array.from([0.5, 1, 0, -1, 3]);
  const var1 = [1, 4, 0.25, 2, 9];
  const var2 = [2, 1, 0.25, 0.5, 1];
  const diag = (v: number[]) => {
    const c = new Float64Array(dims * dims);
    v.forEach((x, i) => (c[i * dims + i] = x));
    return c;
  };
  const value = frechetDistance(
    { count: 10, dims, mean: mean1, cov: diag(var1) },
    { count: 10, dims, mean: mean2, cov: diag(var2) },
  );
  let expected = 0;
  for (let i = 0; i < dims; i++) {
    expected += (mean1[i] - mean2[i]) ** 2 + (Math.sqrt(var1[i]) - Math.sqrt(var2[i])) ** 2;
  }
  assert.ok(Math.abs(value - expected) < 1e-10, `${value} vs ${expected}`);
});

Deno.test("FID and KID grow with added noise", () => {
  const dims = 16;
  const n = 200;
  const real = correlated("noise-real", n, dims);
  const other = correlated("noise-other", n, dims);
  let lastFid = -Infinity;
  let lastKid = -Infinity;
  for (const sigma of [0, 0.1, 0.3, 1]) {
    const noisy = addNoise(other, sigma, `noise-${sigma}`);
    const f = fid(real, noisy, { dims });
    const k = kid(real, noisy, { dims, subsetSize: 100, subsets: 20 }).mean;
    assert.ok(f > lastFid, `sigma ${sigma}: FID ${f} <= ${lastFid}`);
    assert.ok(k > lastKid, `sigma ${sigma}: KID ${k} <= ${lastKid}`);
    lastFid = f;
    lastKid = k;
  }
});

Deno.test("KID of two draws from one distribution is 0 within 3 standard deviations", () => {
  const dims = 16;
  const a = correlated("kid-a", 400, dims);
  const b = correlated("kid-b", 400, dims);
  const result = kid(a, b, { dims, subsetSize: 100 });
  assert.equal(result.subsets, 100);
  assert.equal(result.subsetSize, 100);
  assert.ok(result.std > 0);
  assert.ok(Math.abs(result.mean) < 3 * result.std, `${result.mean} ± ${result.std}`);
  // and a shifted distribution is far outside that band
  const shifted = a.map((v) => v + 0.5);
  const far = kid(shifted, b, { dims, subsetSize: 100 });
  assert.ok(far.mean > 10 * result.std, `shifted: ${far.mean}`);
  // same seed, same subsets
  assert.deepEqual(kid(a, b, { dims, subsetSize: 100 }), result);
});

/** The unbiased MMD² of sets `a` and `b` (`n x dims` each), written out directly. */
function directMmd(a: Float32Array, b: Float32Array, dims: number): number {
  const n = a.length / dims;
  const k = (x: Float32Array, i: number, y: Float32Array, j: number) => {
    let s = 0;
    for (let t = 0; t < dims; t++) s += x[i * dims + t] * y[j * dims + t];
    return (s / dims + 1) ** 3;
  };
  let xx = 0;
  let yy = 0;
  let xy = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      if (i !== j) {
        xx += k(a, i, a, j);
        yy += k(b, i, b, j);
      }
      xy += k(a, i, b, j);
    }
  }
  return xx / (n * (n - 1)) + yy / (n * (n - 1)) - 2 * xy / (n * n);
}

/** The rows `rows` of `x` (`dims` values each). */
function rowsOf(x: Float32Array, rows: number[], dims: number): Float32Array {
  return Float32Array.from(rows.flatMap((r) => [...x.subarray(r * dims, (r + 1) * dims)]));
}

/** Every k-subset of 0..n-1. */
function subsetsOf(n: number, k: number): number[][] {
  if (k === 0) return [[]];
  if (n < k) return [];
  return [...subsetsOf(n - 1, k - 1).map((s) => [...s, n - 1]), ...subsetsOf(n - 1, k)];
}

Deno.test("KID of one subset is the direct MMD² of one pair of half-size subsets", () => {
  const dims = 4;
  const a = gaussian("direct-a", { n: 6, dims });
  const b = gaussian("direct-b", { n: 6, dims, mean: () => 0.5 });
  const result = kid(a, b, { dims, subsets: 1 });
  // 6 images each: subsets of 3 (half), never the whole set
  assert.equal(result.subsetSize, 3);
  const candidates = subsetsOf(6, 3).flatMap((sa) =>
    subsetsOf(6, 3).map((sb) => directMmd(rowsOf(a, sa, dims), rowsOf(b, sb, dims), dims))
  );
  assert.equal(candidates.length, 400);
  const nearest = Math.min(...candidates.map((c) => Math.abs(c - result.mean)));
  assert.ok(nearest < 1e-9 * Math.abs(result.mean), `no subset pair gives ${result.mean}`);
  // sets of identical vectors: every subset gives k(u,u) + k(v,v) - 2 k(u,v), exactly
  const u = Float32Array.from({ length: 6 * dims }, (_, i) => (i % dims) / 4);
  const v = Float32Array.from({ length: 6 * dims }, (_, i) => 1 - (i % dims) / 8);
  const same = kid(u, v, { dims, subsets: 5 });
  const expected = directMmd(u.subarray(0, 2 * dims), v.subarray(0, 2 * dims), dims);
  assert.ok(Math.abs(same.mean - expected) < 1e-12, `${same.mean} vs ${expected}`);
});

Deno.test("KID subsets are at most half the smaller set", () => {
  assert.equal(kidSubsetSize(1000, { n: 256, m: 256 }), 128);
  assert.equal(kidSubsetSize(1000, { n: 5000, m: 5000 }), 1000);
  assert.equal(kidSubsetSize(100, { n: 256, m: 1000 }), 100);
  assert.equal(kidSubsetSize(1000, { n: 256, m: 100 }), 50);
  assert.equal(kidSubsetSize(1000, { n: 3, m: 3 }), 2);
});

Deno.test("KID's std is an error bar when the subset size asked for exceeds the sets", () => {
  // The bug: 64 samples with kidSubsetSize 1000 made every subset the whole set, std ~1e-14.
  const dims = 16;
  const n = 64;
  const real = correlated("bar-real", 20 * n, dims);
  const fake = correlated("bar-fake", 20 * n, dims).map((v) => v + 0.3);
  const estimates: number[] = [];
  const stds: number[] = [];
  for (let r = 0; r < 20; r++) {
    const part = (x: Float32Array) => x.subarray(r * n * dims, (r + 1) * n * dims);
    const k = kid(part(fake), part(real), { dims, subsetSize: 1000, subsets: 50, seed: r });
    assert.equal(k.subsetSize, 32);
    estimates.push(k.mean);
    stds.push(k.std);
  }
  const mean = estimates.reduce((s, v) => s + v, 0) / estimates.length;
  // how much the estimate really moves from one draw of 64 + 64 images to the next
  const spread = Math.sqrt(
    estimates.reduce((s, v) => s + (v - mean) ** 2, 0) / (estimates.length - 1),
  );
  const reported = stds.reduce((s, v) => s + v, 0) / stds.length;
  assert.ok(spread > 0 && mean > 3 * spread, `KID ${mean} ± ${spread} should be clearly > 0`);
  // the reported std is of the order of the real spread, on the large side (about √2 of it)
  const ratio = reported / spread;
  assert.ok(ratio > 0.8 && ratio < 2.5, `reported ${reported} vs real spread ${spread}`);
});

Deno.test("FID refuses sets of different sizes", () => {
  const x = gaussian("size", { n: 10, dims: 3 });
  assert.throws(() => fid(x, x.subarray(0, 27), { dims: 3 }), /equal size/);
});

Deno.test("diversity is the mean distance between two different images' features", () => {
  // three points of a right triangle with sides 3, 4, 5
  const x = Float32Array.from([0, 0, 3, 0, 0, 4]);
  assert.ok(Math.abs(meanPairwiseDistance(x, { dims: 2 }) - 4) < 1e-12);
  // identical images: no diversity
  assert.equal(meanPairwiseDistance(Float32Array.from([1, 2, 1, 2, 1, 2]), { dims: 2 }), 0);
  // a set drawn with half the spread has about half the diversity
  const wide = gaussian("div-wide", { n: 200, dims: 8 });
  const narrow = gaussian("div-narrow", { n: 200, dims: 8, std: () => 0.5 });
  const ratio = meanPairwiseDistance(narrow, { dims: 8 }) / meanPairwiseDistance(wide, { dims: 8 });
  assert.ok(Math.abs(ratio - 0.5) < 0.05, `ratio ${ratio}`);
  assert.throws(() => meanPairwiseDistance(Float32Array.from([1, 2]), { dims: 2 }), /at least 2/);
});
