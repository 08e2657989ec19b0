/**
 * The numbers of a conditional run (`sampler.measure`): for each guidance weight, the attribute
 * judge's accuracy on each conditioned attribute (does the sample show the value it asked for?)
 * and KID against the training set, both from this module's evaluation tools.
 * @module
 */
import type { Experiment } from "../../schemas/experiment.ts";
import type { Dataset } from "../data/mod.ts";
import { evaluateSamples } from "./evaluate.ts";
import { type FeatureNetwork, loadFeatureNetwork } from "./features.ts";
import { toUint8Images } from "./images.ts";
import { type Judge, judgeAccuracy, labelledFromDataset, trainJudge } from "./judge.ts";

/** What {@link ConditionalScorer} sees: one guidance weight's samples and what they asked for. */
export interface ConditionalSamples {
  /** The guidance weight. */
  w: number;
  /** The samples, NHWC float in [-1, 1] (clamped by the scorer as for a PNG). */
  images: Float32Array;
  /** Number of images. */
  count: number;
  /** Image side. */
  size: number;
  /** The requested value index of each image, per conditioned attribute name. */
  requested: Record<string, Int32Array>;
  /** The training images. */
  dataset: Dataset;
}

/** Scores a conditional run's samples: metric name (`accuracy/<attribute>`, `kid`) -> value. */
export type ConditionalScorer = (
  samples: ConditionalSamples,
) => Promise<Record<string, number>>;

/** A scorer and what to free when done. */
export interface ConditionalMeasure {
  /**
   * Scores one guidance weight's samples: `accuracy/<attribute>`, `kid_*` and its `_std`, and
   * the judge's held-out accuracy on real images, `real/<attribute>`.
   */
  score: ConditionalScorer;
  /** Frees the judge and the feature network. */
  dispose(): void;
}

/**
 * Trains (or loads from its cache) the attribute judge on the dataset and loads the KID
 * feature network, as `config.sampler.measure` says; null without `sampler.measure`.
 */
export async function conditionalScorer(
  config: Experiment,
  ctx: { dataset: Dataset; backend: string; log: (line: string) => void },
): Promise<ConditionalMeasure | null> {
  const measure = config.sampler.measure;
  if (!measure) return null;
  const { dataset, log } = ctx;
  log(`measure: training the attribute judge (${measure.judgeSteps} steps, cached by dataset)...`);
  const judge: Judge = await trainJudge(labelledFromDataset(dataset), {
    seed: config.seed,
    steps: measure.judgeSteps,
    log,
  });
  log(
    "  judge held-out accuracy on real images: " +
      Object.entries(judge.accuracy).map(([k, v]) => `${k} ${v.toFixed(3)}`).join(", "),
  );
  const network: FeatureNetwork = await loadFeatureNetwork({ resize: measure.resize });
  const score: ConditionalScorer = async (samples) => {
    const pixels = toUint8Images(samples.images, { count: samples.count, size: samples.size });
    const accuracy = await judgeAccuracy(
      judge,
      { pixels, count: samples.count },
      samples.requested,
    );
    const out: Record<string, number> = {};
    for (const [name, value] of Object.entries(accuracy)) out[`accuracy/${name}`] = value;
    const kid = await evaluateSamples(
      { count: samples.count, size: samples.size, pixels, source: `guidance w = ${samples.w}` },
      {
        network,
        dataset,
        metrics: ["kid"],
        kidSubsets: measure.kidSubsets,
        kidSubsetSize: measure.kidSubsetSize,
        seed: config.seed,
        floor: false,
        backend: ctx.backend,
      },
    );
    // KID with its spread over subsets (at most half the samples each: an error bar).
    Object.assign(out, kid.metrics);
    // What the judge sees on held-out real images: the ceiling of the accuracies above.
    for (const name of Object.keys(accuracy)) out[`real/${name}`] = judge.accuracy[name];
    return out;
  };
  return {
    score,
    dispose: () => {
      judge.dispose();
      network.dispose();
    },
  };
}
