/**
 * Sample quality: the `eval` experiment section, `deno task eval` and `deno task fid`.
 *
 * - ./run_evaluator.ts: {@link RunEvaluator}, evaluation during training (every `eval.every`
 *   epochs, into `eval.jsonl`) and at the end (also into the manifest summary, so `diff` and
 *   `runs` show it), behind the evaluation hook whose contract is {@link EvaluationPoint}.
 * - ./compare_sets.ts: {@link compareImageSets}, KID and FID between two image sets
 *   (`deno task fid`).
 * - ./samples_vs_reference.ts: {@link evaluateSamples}, one evaluation of a generated set
 *   against a reference set (features cached per dataset), with the real-vs-real floor.
 * - The building blocks: {@link loadFeatureNetwork} (./features.ts), {@link kid}, {@link fid}
 *   (./metrics.ts), image sets (./images.ts), the attribute judge ({@link trainJudge},
 *   {@link attributeDistance}, {@link judgeAccuracy}: ./judge.ts) and the conditional scorer
 *   (./conditional.ts).
 * @module
 */
export {
  checkEvalInput,
  type EvaluationHook,
  type EvaluationPoint,
  evaluationSummary,
  formatEvaluation,
  type RunEvalContext,
  type RunEvaluation,
  RunEvaluator,
  samplerProtocol,
} from "./run_evaluator.ts";
export { compareImageSets, type CompareOptions, describeMetrics } from "./compare_sets.ts";
export {
  compareFeatures,
  datasetContentHash,
  type EvalResult,
  evaluateSamples,
  type FeatureMetric,
  metricNames,
  type Protocol,
  referenceFeatures,
} from "./samples_vs_reference.ts";
export {
  DEFAULT_LAYER,
  DEFAULT_RESIZE,
  type FeatureNetwork,
  type FeatureNetworkInfo,
  loadFeatureNetwork,
  NSFWJS_PACKAGE,
} from "./features.ts";
export {
  folderImageSet,
  gridImageSet,
  type ImageSet,
  pickImages,
  sampleImageSet,
  toUint8Images,
} from "./images.ts";
export {
  type AttributeDescriptor,
  attributeDistance,
  type Judge,
  judgeAccuracy,
  labelledFromDataset,
  type LabelledImages,
  trainJudge,
} from "./judge.ts";
export { featureStats, fid, frechetDistance, kid, type KidResult } from "./metrics.ts";
