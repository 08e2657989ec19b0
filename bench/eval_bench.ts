/**
 * The `eval` phase of `deno task bench`: feature extraction speed of the nsfwjs InceptionV3 at
 * mixed5 (images/s at 299 px and at the fast size 128), and the whole evaluation of N samples
 * (default 1,000) against a reference set of N and a floor set of N: extraction of 3N images,
 * KID (100 subsets of min(1000, N)), FID and the floor. Sampling is not included (see the
 * sampling step above: it scales with the steps).
 * @module
 */
import { evaluateSamples, type ImageSet, loadFeatureNetwork } from "../src/eval/mod.ts";
import { deriveRng } from "../src/rng.ts";

/** What the eval phase measured. */
export interface EvalBench {
  /** Seconds to load the network. */
  loadSeconds: number;
  /** Images per second of feature extraction, by resize. */
  extraction: Record<string, { imagesPerSecond: number; images: number; batch: number }>;
  /** The whole evaluation of `samples` images at the fast size. */
  whole: { samples: number; resize: number; seconds: number; featureSeconds: number };
}

/** Random smooth-ish 32x32 images (the pixel content does not change the network's cost). */
function images(count: number, stream: string): ImageSet {
  const size = 32;
  const rng = deriveRng(0, stream);
  const pixels = new Uint8Array(count * size * size * 3);
  for (let i = 0; i < pixels.length; i++) pixels[i] = rng.int(256);
  return { count, size, pixels, source: `bench: ${count} random images` };
}

/** Runs the eval phase; `log` prints each figure as it comes. */
export async function benchEval(
  options: { samples: number; log: (line: string) => void },
): Promise<EvalBench> {
  const { log } = options;
  const extraction: EvalBench["extraction"] = {};
  let loadSeconds = 0;
  for (const [resize, count, batch] of [[299, 32, 16], [128, 200, 25]]) {
    let t = performance.now();
    const net = await loadFeatureNetwork({ resize });
    loadSeconds = (performance.now() - t) / 1000;
    const set = images(count, `bench/eval/${resize}`);
    await net.extract(set.pixels.subarray(0, batch * 32 * 32 * 3), {
      count: batch,
      size: 32,
      batchSize: batch,
    }); // warm-up
    t = performance.now();
    await net.extract(set.pixels, { count, size: 32, batchSize: batch });
    const seconds = (performance.now() - t) / 1000;
    extraction[String(resize)] = { imagesPerSecond: count / seconds, images: count, batch };
    log(
      `feature extraction at ${resize} px: ${(count / seconds).toFixed(1)} images/s ` +
        `(${(1000 * seconds / count).toFixed(0)} ms/image, batch ${batch}, network load ${
          loadSeconds.toFixed(1)
        } s)`,
    );
    net.dispose();
  }
  const n = options.samples;
  const net = await loadFeatureNetwork({ resize: 128 });
  const dataset = images(2 * n, "bench/eval/dataset");
  const samples = images(n, "bench/eval/samples");
  const cacheDir = await Deno.makeTempDir();
  const t = performance.now();
  const result = await evaluateSamples(samples, {
    network: net,
    dataset,
    metrics: ["kid", "fid"],
    kidSubsets: 100,
    kidSubsetSize: 1000,
    seed: 0,
    floor: true,
    backend: "wasm",
    cacheDir,
  });
  const seconds = (performance.now() - t) / 1000;
  const featureSeconds = 3 * n / extraction["128"].imagesPerSecond;
  await Deno.remove(cacheDir, { recursive: true });
  net.dispose();
  log(
    `whole eval of ${n} samples at 128 px (features of ${3 * n} images, KID, FID, floor): ` +
      `${seconds.toFixed(1)} s (about ${featureSeconds.toFixed(0)} s of it features); ` +
      `fid_iv3m5 ${result.metrics.fid_iv3m5.toFixed(3)} between two random sets`,
  );
  return { loadSeconds, extraction, whole: { samples: n, resize: 128, seconds, featureSeconds } };
}
