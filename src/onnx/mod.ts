/**
 * ONNX: the exporter of the trained U-Net (./export.ts, one ONNX node per op of the traced layer
 * graph of src/model/graph.ts; the graph's protobuf in ./graph.ts), a checkpoint's cached
 * `model.onnx` (./checkpoint.ts), ONNX Runtime (./runtime.ts), and the sampling engine that
 * `sampler.engine` names (./sampling_engine.ts: tfjs, or onnxruntime on the exported checkpoint).
 * @module
 */
export { buildUnetOnnx, type UnetOnnxOptions } from "./export.ts";
export { exportCheckpoint, type ExportedModel } from "./checkpoint.ts";
export {
  createSamplingEngine,
  type EngineInfo,
  type EngineOptions,
  ortDenoiser,
  type OrtLabels,
  type SamplingEngine,
} from "./sampling_engine.ts";
export {
  defaultProviders,
  type ExecutionProvider,
  loadOnnxRuntime,
  openModel,
  type Ort,
  type OrtModel,
  OrtUnavailableError,
  type UnetFeeds,
} from "./runtime.ts";
