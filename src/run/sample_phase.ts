/**
 * Sampling (Algorithm 2 or DDIM) and its figures, on the engine `sampler.engine` names: a run's
 * sampling phase ({@linkcode samplePhase}), and the samples themselves, which `run` and `sample`
 * share ({@linkcode writeSamples}): samples.png and the trajectory, or for a conditional model
 * one grid per guidance weight and, when `sampler.measure` asks, guidance.md.
 * @module
 */
import { describeSampler } from "../config/mod.ts";
import { samplingSteps } from "../diffusion/generate.ts";
import { guidedDenoiser } from "../diffusion/guidance.ts";
import { type ConditionalScorer, conditionalScorer } from "../eval/conditional.ts";
import type { SamplingEngine } from "../onnx/mod.ts";
import type { LabelPlan } from "./conditions.ts";
import {
  type SampledImages,
  sampleImages,
  type SampleImagesOptions,
  writeConditionalFigure,
  writeRecoveryFigure,
  writeSampleFigures,
} from "./figures.ts";
import { type GuidanceRow, writeGuidanceTable } from "./guidance_table.ts";
import type { RunRecord } from "./lifecycle.ts";
import type { RunSession } from "./session.ts";
import type { RunOptions } from "./types.ts";

/** Progress lines, stop signal, progress bars, a scorer replacing `sampler.measure`'s. */
export type SampleOptions = Pick<RunOptions, "signal" | "progress" | "scoreConditional"> & {
  log: (line: string) => void;
};

/**
 * A run's sampling phase: the sampling engine on the run's checkpoint, the samples
 * ({@linkcode writeSamples}), then the recovery figure; the engine and the sampling time go to
 * the manifest. Does nothing but record the step count when stopped before it.
 */
export async function samplePhase(
  session: RunSession,
  ctx: { run: RunRecord; options: SampleOptions },
): Promise<void> {
  const { config, schedule } = session;
  const { run, options } = ctx;
  run.manifest.summary.samplingSteps = samplingSteps(config.sampler, schedule.timesteps);
  if (options.signal?.aborted) return;
  const engine = await session.startSampling(run.checkpointDir);
  run.manifest.engine = engine.info;
  // A conditional run samples its label plan's count (whole grid rows), not sampler.count.
  const count = session.conditioning?.plan.count ?? config.sampler.count;
  const how = describeSampler({ ...config.sampler, count }, schedule.timesteps);
  const weights = session.ema ? ", EMA weights" : "";
  options.log(`sampling ${count} images (${how}${weights})`);
  const started = performance.now();
  const done = await writeSamples(session, { dir: run.dir, options });
  run.manifest.summary.sampleSeconds = +((performance.now() - started) / 1000).toFixed(1);
  if (done) {
    await writeRecoveryFigure(run.dir, engine.denoise, {
      config,
      dataset: session.dataset!,
      schedule,
      log: options.log,
    });
  }
}

/**
 * The samples of `config.sampler` on the session's sampling engine into `ctx.dir` (see the
 * module documentation). Returns false when stopped before the end.
 */
export async function writeSamples(
  session: RunSession,
  ctx: { dir: string; options: SampleOptions },
): Promise<boolean> {
  const { config, schedule, size } = session;
  const { dir, options } = ctx;
  const engine = session.sampling!;
  const stopped = () => options.signal?.aborted ?? false;
  const sampleOptions: SampleImagesOptions = {
    config,
    size,
    log: options.log,
    signal: options.signal,
    onProgress: options.progress
      ? (done: number, total: number) => options.progress!.update("sample", done, total)
      : undefined,
  };
  const conditional = session.conditioning;
  if (!conditional) {
    const sampled = await sampleImages(engine.denoise, schedule, sampleOptions);
    if (sampled) await writeSampleFigures(dir, sampled, { config, size });
    return sampled !== null && !stopped();
  }
  const dataset = session.dataset!;
  // `sampler.measure`: the judge and KID, unless the caller brings its own scorer.
  const measure = options.scoreConditional
    ? null
    : await conditionalScorer(config, { dataset, backend: session.backend.name, log: options.log });
  try {
    const rows = await sampleConditional({ engine, plan: conditional.plan, session }, {
      ...sampleOptions,
      dir,
      stopped,
      score: options.scoreConditional ?? measure?.score,
      names: conditional.conditioned.attributes.map((a) => a.name),
    });
    if (rows === null || stopped()) return false;
    if (rows.length > 0) await writeGuidanceTable(dir, rows);
    return true;
  } finally {
    measure?.dispose();
  }
}

/**
 * A conditional run's sampling: for each guidance weight w of `sampler.guidance` (default
 * [0]), the plan's labels sampled from the same `sample/noise` stream (so the grids differ only
 * by w), written as `samples.png` (the first w) and `samples-w<w>.png`, then scored. Returns the
 * table rows (empty without a scorer), or null when stopped.
 */
async function sampleConditional(
  parts: { engine: SamplingEngine; plan: LabelPlan; session: RunSession },
  options: SampleImagesOptions & {
    dir: string;
    stopped: () => boolean;
    score?: ConditionalScorer;
    names: string[];
  },
): Promise<GuidanceRow[] | null> {
  const { engine, plan, session } = parts;
  const { config, size, dir } = options;
  const guidance = config.sampler.guidance ?? [0];
  const a = options.names.length;
  const rows: GuidanceRow[] = [];
  for (const [k, w] of guidance.entries()) {
    options.log(`  guidance w = ${w}: ${plan.count} images (${plan.rows.length} rows)`);
    const sampled: SampledImages | null = await sampleImages(engine.denoise, session.schedule, {
      ...options,
      count: plan.count,
      trajectory: k === 0,
      batchDenoiser: ({ from, to }) =>
        guidedDenoiser({
          conditional: engine.conditioned({ labels: plan.labels.subarray(from * a, to * a) }),
          unconditional: engine.denoise,
        }, w),
    });
    if (!sampled || options.stopped()) return null;
    const figure = { config, size, plan };
    if (k === 0) {
      await writeConditionalFigure(dir, sampled, { ...figure, file: "samples.png" });
      await writeSampleFigures(dir, sampled, {
        config,
        size,
        trajectoryOnly: true,
      });
    }
    if (guidance.length > 1) {
      await writeConditionalFigure(dir, sampled, { ...figure, file: `samples-w${w}.png` });
    }
    if (options.score) {
      const requested: Record<string, Int32Array> = {};
      options.names.forEach((name, j) => {
        requested[name] = Int32Array.from({ length: plan.count }, (_, i) => plan.labels[i * a + j]);
      });
      const metrics = await options.score({
        w,
        images: sampled.images,
        count: plan.count,
        size,
        requested,
        dataset: session.dataset!,
      });
      options.log(
        `  w = ${w}: ` + Object.entries(metrics).map(([n, v]) => `${n} ${v.toFixed(3)}`).join(", "),
      );
      rows.push({ w, metrics });
    }
  }
  return rows;
}
