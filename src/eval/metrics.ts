/**
 * The sample-quality metrics on feature vectors (pure functions, float64 throughout).
 *
 * - FID: the Fréchet distance ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½) between Gaussians fitted
 *   to two feature sets. The trace of the square root is computed stably: as
 *   Σ √λ(Σ₁^½ Σ₂ Σ₁^½) with symmetric eigen-decompositions (negative round-off eigenvalues
 *   clipped to 0), or, when there are fewer samples than dimensions, exactly as the nuclear norm
 *   ‖A Bᵀ‖_* / √((n−1)(m−1)) of the centred feature matrices.
 * - KID: the unbiased MMD² with the cubic kernel k(x, y) = (x·y / d + 1)³, averaged over seeded
 *   random subsets (clean-fid's and torch-fidelity's definition), with its standard deviation.
 * - Diversity: the mean Euclidean distance between the features of two different images of one
 *   set (0 when every image is the same).
 * @module
 */
import { EigenvalueDecomposition, Matrix } from "ml-matrix";
import { deriveRng, type Rng } from "../rng.ts";

/** The Gaussian fitted to a feature set. */
export interface FeatureStats {
  /** Number of feature vectors. */
  count: number;
  /** Length of each. */
  dims: number;
  /** The mean, `dims` values. */
  mean: Float64Array;
  /** The unbiased covariance (divided by count - 1), `dims x dims` row-major. */
  cov: Float64Array;
}

/** Checks that `features` holds whole vectors of `dims` and returns their count. */
function countOf(features: ArrayLike<number>, dims: number): number {
  const n = features.length / dims;
  if (!Number.isInteger(n) || n < 2) {
    throw new RangeError(
      `need at least 2 feature vectors of ${dims}, got ${features.length} values`,
    );
  }
  return n;
}

/** `features` (count x dims) minus their mean, as float64, and the mean. */
function centred(
  features: ArrayLike<number>,
  dims: number,
): { x: Float64Array; mean: Float64Array; count: number } {
  const count = countOf(features, dims);
  const mean = new Float64Array(dims);
  for (let i = 0; i < count; i++) {
    for (let j = 0; j < dims; j++) mean[j] += features[i * dims + j];
  }
  for (let j = 0; j < dims; j++) mean[j] /= count;
  const x = new Float64Array(count * dims);
  for (let i = 0; i < count; i++) {
    for (let j = 0; j < dims; j++) x[i * dims + j] = features[i * dims + j] - mean[j];
  }
  return { x, mean, count };
}

/** Mean and unbiased covariance of `features` (`count x dims`, row-major). */
export function featureStats(features: ArrayLike<number>, dims: number): FeatureStats {
  const { x, mean, count } = centred(features, dims);
  const cov = new Float64Array(dims * dims);
  for (let i = 0; i < count; i++) {
    const row = i * dims;
    for (let a = 0; a < dims; a++) {
      const va = x[row + a];
      if (va === 0) continue;
      const out = a * dims;
      for (let b = a; b < dims; b++) cov[out + b] += va * x[row + b];
    }
  }
  for (let a = 0; a < dims; a++) {
    for (let b = a; b < dims; b++) {
      const v = cov[a * dims + b] / (count - 1);
      cov[a * dims + b] = v;
      cov[b * dims + a] = v;
    }
  }
  return { count, dims, mean, cov };
}

function toMatrix(values: Float64Array, rows: number, columns: number): Matrix {
  const m = new Matrix(rows, columns);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < columns; j++) m.set(i, j, values[i * columns + j]);
  }
  return m;
}

/** Eigenvalues of a symmetric matrix, negative round-off clipped to 0. */
function psdEigenvalues(m: Matrix): number[] {
  const e = new EigenvalueDecomposition(m, { assumeSymmetric: true });
  return e.realEigenvalues.map((v) => Math.max(v, 0));
}

/** Σ √λ(S^½ T S^½) = Tr (S T)^½ for symmetric positive semi-definite S and T. */
function traceSqrtProduct(s: Matrix, t: Matrix): number {
  const e = new EigenvalueDecomposition(s, { assumeSymmetric: true });
  const v = e.eigenvectorMatrix;
  const roots = e.realEigenvalues.map((x) => Math.sqrt(Math.max(x, 0)));
  const scaled = v.clone();
  for (let i = 0; i < scaled.rows; i++) {
    for (let j = 0; j < scaled.columns; j++) scaled.set(i, j, scaled.get(i, j) * roots[j]);
  }
  const sqrtS = scaled.mmul(v.transpose());
  const product = sqrtS.mmul(t).mmul(sqrtS);
  // symmetrise away the round-off of the products
  const sym = product.add(product.transpose()).mul(0.5);
  return psdEigenvalues(sym).reduce((acc, x) => acc + Math.sqrt(x), 0);
}

function trace(values: Float64Array, dims: number): number {
  let t = 0;
  for (let i = 0; i < dims; i++) t += values[i * dims + i];
  return t;
}

function squaredDistance(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] - b[i]) ** 2;
  return s;
}

/**
 * The Fréchet distance between the Gaussians `a` and `b` (the FID formula). Clamped at 0
 * against round-off.
 */
export function frechetDistance(a: FeatureStats, b: FeatureStats): number {
  if (a.dims !== b.dims) throw new RangeError(`dims differ: ${a.dims} vs ${b.dims}`);
  const d = a.dims;
  const cross = traceSqrtProduct(toMatrix(a.cov, d, d), toMatrix(b.cov, d, d));
  const value = squaredDistance(a.mean, b.mean) + trace(a.cov, d) + trace(b.cov, d) - 2 * cross;
  return Math.max(value, 0);
}

/**
 * FID between two feature sets of equal size (`count x dims` each). With fewer samples than
 * dimensions the trace term is the exact nuclear-norm form (an n x n problem); otherwise
 * {@link frechetDistance} of their statistics. Throws when the sizes differ: FID is biased by N,
 * so it is only reported at equal N.
 */
export function fid(a: ArrayLike<number>, b: ArrayLike<number>, options: { dims: number }): number {
  const { dims } = options;
  const n = countOf(a, dims);
  const m = countOf(b, dims);
  if (n !== m) throw new RangeError(`FID needs sets of equal size, got ${n} and ${m}`);
  if (n > dims) return frechetDistance(featureStats(a, dims), featureStats(b, dims));
  const ca = centred(a, dims);
  const cb = centred(b, dims);
  // G = A Bᵀ (n x m); Tr (Σa Σb)^½ = ‖G‖_* / √((n-1)(m-1)) = Σ √λ(G Gᵀ) / √((n-1)(m-1)).
  const g = new Matrix(n, m);
  let traceA = 0;
  let traceB = 0;
  for (let i = 0; i < n; i++) {
    const ri = i * dims;
    for (let k = 0; k < dims; k++) traceA += ca.x[ri + k] ** 2;
    for (let j = 0; j < m; j++) {
      const rj = j * dims;
      let s = 0;
      for (let k = 0; k < dims; k++) s += ca.x[ri + k] * cb.x[rj + k];
      g.set(i, j, s);
    }
  }
  for (let k = 0; k < cb.x.length; k++) traceB += cb.x[k] ** 2;
  const ggt = g.mmul(g.transpose());
  const sym = ggt.add(ggt.transpose()).mul(0.5);
  const nuclear = psdEigenvalues(sym).reduce((acc, x) => acc + Math.sqrt(x), 0);
  const value = squaredDistance(ca.mean, cb.mean) + traceA / (n - 1) + traceB / (m - 1) -
    2 * nuclear / Math.sqrt((n - 1) * (m - 1));
  return Math.max(value, 0);
}

/** Options of {@link kid}. */
export interface KidOptions {
  /** Length of each feature vector. */
  dims: number;
  /** Number of random subsets (default 100). */
  subsets?: number;
  /**
   * Requested subset size (default 1000); the size used is {@link kidSubsetSize}: at most half of
   * the smaller set, so that the subsets differ and their spread means something.
   */
  subsetSize?: number;
  /** Seed of the subset draws (default 0). */
  seed?: number;
}

/** A KID estimate. */
export interface KidResult {
  /** Mean over the subsets of the unbiased MMD². */
  mean: number;
  /**
   * Standard deviation over the subsets: the spread of a KID estimate made from `subsetSize`
   * images of each set. At half the set it is about √2 times the error of the mean (the
   * estimate's variance goes as 1 / m), so as an error bar it errs on the large side.
   */
  std: number;
  /** The subset size used. */
  subsetSize: number;
  /** Number of subsets. */
  subsets: number;
}

/** Largest set size whose Gram matrices are precomputed (float64, size² values each). */
const GRAM_LIMIT = 2500;

function dot(x: Float64Array, i: number, y: Float64Array, j: number, dims: number): number {
  const a = i * dims;
  const b = j * dims;
  let s = 0;
  for (let k = 0; k < dims; k++) s += x[a + k] * y[b + k];
  return s;
}

/** k(x_i, y_j) = (x_i · y_j / d + 1)³, from precomputed dot products when the sets are small. */
function kernelSource(
  x: Float64Array,
  y: Float64Array,
  dims: number,
): (i: number, j: number) => number {
  const n = x.length / dims;
  const m = y.length / dims;
  const cubic = (v: number) => (v / dims + 1) ** 3;
  if (n > GRAM_LIMIT || m > GRAM_LIMIT) return (i, j) => cubic(dot(x, i, y, j, dims));
  const gram = new Float64Array(n * m);
  const symmetric = x === y;
  for (let i = 0; i < n; i++) {
    for (let j = symmetric ? i : 0; j < m; j++) {
      const v = cubic(dot(x, i, y, j, dims));
      gram[i * m + j] = v;
      if (symmetric) gram[j * m + i] = v;
    }
  }
  return (i, j) => gram[i * m + j];
}

/** `k` distinct indices of 0..n-1, drawn uniformly (partial Fisher-Yates). */
function choose(rng: Rng, n: number, k: number): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = 0; i < k; i++) {
    const j = i + rng.int(n - i);
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p.subarray(0, k);
}

/**
 * The KID subset size for sets of `sizes.n` and `sizes.m` images: min(`requested`,
 * ⌊min(n, m) / 2⌋), and at least 2 (with fewer than 4 images the subsets cannot differ much).
 * clean-fid and torch-fidelity take min(requested, n): with fewer images than the requested size
 * (1000 by default) every subset is then the whole set, all subsets give the same number and the
 * "standard deviation" is round-off (1e-14). Subsets of at most half the set overlap by about half
 * their images, so their spread measures how much the estimate moves with the images it is made
 * from.
 */
export function kidSubsetSize(requested: number, sizes: { n: number; m: number }): number {
  return Math.max(2, Math.min(requested, Math.floor(Math.min(sizes.n, sizes.m) / 2)));
}

/**
 * KID between feature sets `a` and `b` (`count x dims` each): for each of `subsets` seeded
 * subsets of size m = {@link kidSubsetSize} (drawn without replacement from each set), the
 * unbiased MMD²
 * Σ_{i≠j} k(a_i, a_j) / (m(m−1)) + Σ_{i≠j} k(b_i, b_j) / (m(m−1)) − 2 Σ_{i,j} k(a_i, b_j) / m²;
 * returns their mean and standard deviation.
 */
export function kid(a: ArrayLike<number>, b: ArrayLike<number>, options: KidOptions): KidResult {
  const { dims } = options;
  const n = countOf(a, dims);
  const nb = countOf(b, dims);
  const subsets = options.subsets ?? 100;
  const m = kidSubsetSize(options.subsetSize ?? 1000, { n, m: nb });
  const x = Float64Array.from(a);
  const y = Float64Array.from(b);
  const kxx = kernelSource(x, x, dims);
  const kyy = kernelSource(y, y, dims);
  const kxy = kernelSource(x, y, dims);
  const rng = deriveRng(options.seed ?? 0, "eval/kid");
  const values: number[] = [];
  for (let s = 0; s < subsets; s++) {
    const ix = choose(rng, n, m);
    const iy = choose(rng, nb, m);
    let sxx = 0;
    let syy = 0;
    let sxy = 0;
    for (let i = 0; i < m; i++) {
      for (let j = i + 1; j < m; j++) {
        sxx += kxx(ix[i], ix[j]);
        syy += kyy(iy[i], iy[j]);
      }
      for (let j = 0; j < m; j++) sxy += kxy(ix[i], iy[j]);
    }
    values.push((2 * sxx + 2 * syy) / (m * (m - 1)) - (2 * sxy) / (m * m));
  }
  const mean = values.reduce((acc, v) => acc + v, 0) / subsets;
  const std = Math.sqrt(values.reduce((acc, v) => acc + (v - mean) ** 2, 0) / subsets);
  return { mean, std, subsetSize: m, subsets };
}

/**
 * The mean Euclidean distance between the feature vectors of two different images of a set
 * (`count x dims`), over all count (count − 1) / 2 pairs, in float64: how different the images
 * of a set are from each other (0 when they are all the same). Throws for fewer than 2 vectors.
 */
export function meanPairwiseDistance(
  features: ArrayLike<number>,
  options: { dims: number },
): number {
  const { dims } = options;
  const n = countOf(features, dims);
  const x = Float64Array.from(features);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      let s = 0;
      for (let k = 0; k < dims; k++) s += (x[i * dims + k] - x[j * dims + k]) ** 2;
      sum += Math.sqrt(s);
    }
  }
  return sum / (n * (n - 1) / 2);
}
