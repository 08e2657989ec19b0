/**
 * Central finite differences in float64, to hold the kernels' gradient references against the
 * derivatives of their forward references.
 * @module
 */

/** Arrays by binding name. */
export type Arrays = Record<string, Float64Array>;

/**
 * ∂/∂inputs[wrt] of Σ_k Σ_i seeds[k][i] · f(inputs)[k][i], one central difference per element
 * (inputs[wrt] is perturbed in place and restored).
 */
export function numericGradient(
  f: (inputs: Arrays) => Arrays,
  inputs: Arrays,
  options: { seeds: Arrays; wrt: string; h?: number },
): Float64Array {
  const { seeds, wrt } = options;
  const h = options.h ?? 1e-5;
  const x = inputs[wrt];
  const objective = (): number => {
    const out = f(inputs);
    let s = 0;
    for (const k in seeds) {
      const y = out[k];
      const dy = seeds[k];
      for (let i = 0; i < dy.length; i++) s += dy[i] * y[i];
    }
    return s;
  };
  const g = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    x[i] = v + h;
    const plus = objective();
    x[i] = v - h;
    const minus = objective();
    x[i] = v;
    g[i] = (plus - minus) / (2 * h);
  }
  return g;
}

/** testData as float64 (the same values). */
export function f64(values: ArrayLike<number>): Float64Array {
  return Float64Array.from(values);
}
