/**
 * The recovery experiment (seed 002): noise real images forward to step t, x_t ~ q(x_t | x_0),
 * then run the DDPM reverse process from t down to 0, once with σ_t² = β_t and once with
 * σ_t² = β̃_t, with the sampling loop of ./generate.ts over the indices t - 1..0. Both reverse
 * runs use the same step noise, so they differ only in the variance.
 * @module
 */
import { Rng } from "../rng.ts";
import { tf } from "../tf.ts";
import { qSample } from "./forward.ts";
import { reverseProcess } from "./generate.ts";
import { ddpmRule, ddpmTimesteps, type Denoiser } from "./sampler.ts";
import type { Schedule } from "./schedule.ts";
import type { Prediction } from "./targets.ts";

/** Options of {@link recover}. */
export interface RecoveryOptions {
  /** Clean images [N, H, W, C] in [-1, 1]. */
  x0: tf.Tensor4D;
  /** Forward steps t, 1..T (t = T noises with ᾱ_T; the reverse process then takes t steps). */
  t: readonly number[];
  /**
   * Generator (the run's `recovery/noise` stream). Draws, for each t in order: the forward
   * noise ε, then the step noise z of the reverse steps (shared by both variances).
   */
  rng: Rng;
  /** Add σ_t z in the reverse steps (default true). */
  stepNoise?: boolean;
  /** What the denoiser outputs (default `eps`). */
  prediction?: Prediction;
  /** Clip x̂_0 to [-1, 1] in the reverse steps (default false). */
  clipX0?: boolean;
  /** Called after every reverse step (progress, interruption). */
  onStep?: (info: { t: number; variance: "beta" | "posterior"; index: number }) =>
    | void
    | Promise<void>;
}

/** The four columns of the recovery figure for one t, each [N, H, W, C] values. */
export interface RecoveryRow {
  /** The forward step. */
  t: number;
  /** x_0. */
  original: Float32Array;
  /** x_t. */
  noised: Float32Array;
  /** x_0 recovered with σ_t² = β_t. */
  beta: Float32Array;
  /** x_0 recovered with σ_t² = β̃_t. */
  posterior: Float32Array;
}

/** Noises `x0` to each t and recovers it with both variances; one {@link RecoveryRow} per t. */
export async function recover(
  denoise: Denoiser,
  schedule: Schedule,
  options: RecoveryOptions,
): Promise<RecoveryRow[]> {
  const { x0, rng } = options;
  const shape = x0.shape;
  const n = x0.size;
  const original = (await x0.data()) as Float32Array;
  const rows: RecoveryRow[] = [];
  for (const t of options.t) {
    if (!(Number.isInteger(t) && t >= 1 && t <= schedule.timesteps)) {
      throw new RangeError(`recovery t must be an integer in [1, ${schedule.timesteps}], got ${t}`);
    }
    const eps = rng.normal(n);
    const xt = tf.tidy(() =>
      qSample(x0, tf.tensor4d(eps, shape), {
        schedule,
        steps: new Int32Array(shape[0]).fill(t - 1),
      })
    );
    // The reverse process from x_t: the sampling loop over the indices t - 1..0.
    const reverse = async (variance: "beta" | "posterior", generator: Rng) => {
      const flags = { variance, stepNoise: options.stepNoise ?? true, clipX0: options.clipX0 };
      const out = await reverseProcess(
        denoise,
        ddpmRule(schedule, { flags, prediction: options.prediction }),
        {
          x: tf.clone(xt),
          timesteps: ddpmTimesteps(t - 1),
          rng: generator,
          onStep: options.onStep ? (index) => options.onStep!({ t, variance, index }) : undefined,
        },
      );
      const data = (await out.data()) as Float32Array;
      out.dispose();
      return data;
    };
    // Same step noise for both variances: β runs on a copy of the generator, β̃ on the original.
    const beta = await reverse("beta", new Rng(rng.state()));
    const posterior = await reverse("posterior", rng);
    rows.push({ t, original, noised: (await xt.data()) as Float32Array, beta, posterior });
    xt.dispose();
  }
  return rows;
}

/**
 * The images of the recovery figure in grid order, for `makeGrid` with 4 columns: for each t,
 * for each image, original | x_t | recovered with β | recovered with β̃.
 */
export function recoveryGridImages(
  rows: readonly RecoveryRow[],
  options: { count: number },
): Float32Array {
  if (rows.length === 0) return new Float32Array(0);
  const size = rows[0].original.length / options.count;
  const out = new Float32Array(rows.length * options.count * 4 * size);
  let offset = 0;
  for (const row of rows) {
    for (let k = 0; k < options.count; k++) {
      for (const column of [row.original, row.noised, row.beta, row.posterior]) {
        out.set(column.subarray(k * size, (k + 1) * size), offset);
        offset += size;
      }
    }
  }
  return out;
}

/** A distance over the images of one recovery row: mean, sample std and count. */
export interface DistanceStat {
  /** Mean over the images. */
  mean: number;
  /** Sample standard deviation over the images (0 for one image). */
  std: number;
  /** Number of images. */
  n: number;
}

/** The distances of one t of the recovery experiment (RMS pixel difference on a 0-1 scale). */
export interface RecoveryDistances {
  /** The forward step. */
  t: number;
  /** x_t from x_0: how much the forward process changed the images. */
  noisedToOriginal: DistanceStat;
  /** Each recovered image from its original, with σ² = β and σ² = β̃. */
  toOriginal: { beta: DistanceStat; posterior: DistanceStat };
  /** Each recovered image from another training image, with σ² = β and σ² = β̃ (null without). */
  toRandom: { beta: DistanceStat; posterior: DistanceStat } | null;
  /** Each original from that other training image: how far apart two faces are (null without). */
  originalToRandom: DistanceStat | null;
}

function stat(values: readonly number[]): DistanceStat {
  const n = values.length;
  const mean = values.reduce((a, v) => a + v, 0) / n;
  const std = n < 2 ? 0 : Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1));
  return { mean, std, n };
}

/**
 * RMS difference of image `i` of `a` and `b` (NHWC values in [-1, 1], clamped as a PNG is) on a
 * 0-1 pixel scale: 0 for the same image, about 0.3 between two unrelated faces.
 */
function rmse(
  a: Float32Array,
  b: Float32Array,
  options: { index: number; pixels: number },
): number {
  const { index, pixels } = options;
  let s = 0;
  for (let k = index * pixels; k < (index + 1) * pixels; k++) {
    const x = Math.min(1, Math.max(-1, a[k]));
    const y = Math.min(1, Math.max(-1, b[k]));
    s += ((x - y) / 2) ** 2;
  }
  return Math.sqrt(s / pixels);
}

/**
 * The numbers behind recovery.png, per t: how far each recovered image is from its original,
 * beside how far it is from `random` (for each original, another training image: `count` images
 * of the same shape), which says what "totally different" measures on this data.
 */
export function recoveryDistances(
  rows: readonly RecoveryRow[],
  options: { count: number; random?: Float32Array },
): RecoveryDistances[] {
  const { count, random } = options;
  return rows.map((row) => {
    const pixels = row.original.length / count;
    const each = (a: Float32Array, b: Float32Array) =>
      stat(Array.from({ length: count }, (_, index) => rmse(a, b, { index, pixels })));
    return {
      t: row.t,
      noisedToOriginal: each(row.noised, row.original),
      toOriginal: {
        beta: each(row.beta, row.original),
        posterior: each(row.posterior, row.original),
      },
      toRandom: random
        ? { beta: each(row.beta, random), posterior: each(row.posterior, random) }
        : null,
      originalToRandom: random ? each(row.original, random) : null,
    };
  });
}
