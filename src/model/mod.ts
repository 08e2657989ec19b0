/**
 * The `model` section: builds the denoising network it describes. The model knows nothing of
 * schedules or samplers; they see it only as `predict(x_t, t)`.
 * @module
 */
import type { ModelConfig } from "../../schemas/experiment.ts";
import { type NamedArray, permute4 } from "../io/safetensors.ts";
import type { Rng } from "../rng.ts";
import { tf, variableFrom } from "../tf.ts";
import { tfjsLayers } from "./layers.ts";
import {
  type ConditionInput,
  type ConditionShape,
  encodedWidth,
  encodeLabels,
} from "./conditioning.ts";
import type { EncodedCondition } from "./layer_ops.ts";
import type { ParamSpec } from "./params.ts";
import { Unet, type UnetShape } from "./unet.ts";

export type { ParamSpec } from "./params.ts";
export type { ConditionInput, ConditionShape } from "./conditioning.ts";
export { encodedWidth, encodeLabels } from "./conditioning.ts";
export { countParameters, levelResolutions, Unet } from "./unet.ts";

/**
 * The network `config` describes. A conditional config (`conditioning`) needs the number of
 * values of each conditioned attribute (`labelSizes`, in `conditioning.attributes` order), which
 * the dataset knows; without `conditioning` the result is the unconditional network.
 */
export function modelShape(config: ModelConfig, labelSizes?: readonly number[]): UnetShape {
  const c = config.conditioning;
  if (!c) return config;
  if (!labelSizes || labelSizes.length !== c.attributes.length) {
    throw new Error(
      `model.conditioning: the sizes of ${c.attributes.length} attributes are needed ` +
        `(got ${labelSizes?.length ?? "none"})`,
    );
  }
  const condition: ConditionShape = {
    sizes: [...labelSizes],
    encoding: c.encoding,
    layers: c.layers,
    width: c.width,
    tokens: c.tokens,
    time: c.time,
    ...(c.crossAttention ? { crossAttention: c.crossAttention } : {}),
  };
  return { ...config, condition };
}

/** Options of a forward pass. */
export interface PredictOptions {
  /**
   * Training only: the generator of the dropout masks (e.g. the run's `train/dropout/step-<k>`
   * stream). Without it dropout is off, as in sampling.
   */
  dropoutRng?: Rng;
  /** A conditional network's labels (and dropped examples); absent: the null embedding. */
  condition?: ConditionInput;
}

/** A denoising network with named, trainable parameters. */
export interface DenoiseModel {
  /** The modules of the network (their parameters and forward pass). */
  net: Unet;
  /** Trainable parameters by PyTorch state-dict name, in state-dict order. */
  params: Map<string, tf.Variable>;
  /** Predicts the network output for x_t [B, H, W, C] and float timesteps t [B]; use in tf.tidy. */
  predict(x: tf.Tensor4D, t: tf.Tensor1D, options?: PredictOptions): tf.Tensor4D;
  /** Frees the parameters. */
  dispose(): void;
}

function initialValues(spec: ParamSpec, rng: Rng): Float32Array {
  const size = spec.shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(size);
  if (spec.init.kind === "ones") out.fill(1);
  else if (spec.init.kind === "uniform") {
    const bound = 1 / Math.sqrt(spec.init.fanIn);
    rng.fillUniform(out, -bound, bound);
  }
  return out;
}

/**
 * Builds the model of `config` with PyTorch's default initialisation, every value drawn in
 * state-dict order from `options.rng` (the run's `model/init` stream). A conditional config
 * needs `labelSizes` (see {@link modelShape}).
 */
export function createModel(
  config: ModelConfig,
  options: { rng: Rng; labelSizes?: readonly number[] },
): DenoiseModel {
  const net = new Unet(modelShape(config, options.labelSizes));
  const params = new Map<string, tf.Variable>();
  for (const spec of net.params) {
    params.set(spec.name, variableFrom(tf.tensor(initialValues(spec, options.rng), spec.shape)));
  }
  return wrap(net, params);
}

/**
 * The same network computed with other weights of the same names and shapes, e.g. the EMA
 * weights for sampling. The new model shares `params` (its dispose frees them).
 */
export function withParams(model: DenoiseModel, params: Map<string, tf.Variable>): DenoiseModel {
  for (const [name, v] of model.params) {
    const other = params.get(name);
    if (!other) throw new Error(`withParams: no parameter named ${name}`);
    if (other.shape.join("x") !== v.shape.join("x")) {
      throw new Error(`withParams: ${name} has shape [${other.shape}], model needs [${v.shape}]`);
    }
  }
  return wrap(model.net, params);
}

function wrap(net: Unet, params: Map<string, tf.Variable>): DenoiseModel {
  const lookup = (name: string): tf.Tensor => {
    const v = params.get(name);
    if (!v) throw new Error(`model: no parameter named ${name}`);
    return v;
  };
  return {
    net,
    params,
    predict: (x, t, options) =>
      net.forward<tf.Tensor>(x, t, {
        ops: tfjsLayers(lookup, { dropoutRng: options?.dropoutRng }),
        condition: encodeCondition(net, options?.condition, x.shape[0]),
      }) as tf.Tensor4D,
    dispose: () => params.forEach((v) => v.dispose()),
  };
}

/** A conditional network's labels as tensors: encoded [B, width] and the drop mask [B, 1]. */
function encodeCondition(
  net: Unet,
  condition: ConditionInput | undefined,
  batch: number,
): EncodedCondition<tf.Tensor> | undefined {
  if (condition === undefined) return undefined;
  const shape = net.condition;
  if (shape === undefined) throw new Error("labels given to an unconditional network");
  const rows = condition.labels.length / shape.sizes.length;
  if (rows !== batch) throw new RangeError(`labels for ${rows} examples, batch of ${batch}`);
  const drop = condition.drop ? Float32Array.from(condition.drop) : new Float32Array(batch);
  return {
    labels: tf.tensor2d(encodeLabels(condition.labels, shape), [batch, encodedWidth(shape)]),
    drop: tf.tensor2d(drop, [batch, 1]),
  };
}

/** Copies of the parameters as plain arrays (this library's layout), for checkpoints. */
export async function exportParams(model: DenoiseModel): Promise<Map<string, NamedArray>> {
  const out = new Map<string, NamedArray>();
  for (const [name, v] of model.params) {
    out.set(name, { shape: [...v.shape], data: (await v.data()) as Float32Array });
  }
  return out;
}

/** Assigns saved parameters (this library's layout); every parameter must be present with its shape. */
export function importParams(model: DenoiseModel, arrays: Map<string, NamedArray>): void {
  for (const [name, v] of model.params) {
    const a = arrays.get(name);
    if (!a) throw new Error(`checkpoint has no parameter ${name}`);
    if (a.shape.join("x") !== v.shape.join("x")) {
      throw new Error(
        `checkpoint parameter ${name} has shape [${a.shape}], model needs [${v.shape}]`,
      );
    }
    tf.tidy(() => v.assign(tf.tensor(a.data, a.shape)));
  }
}

/**
 * Converts a PyTorch state dict of the reference U-Net (OIHW convs, [out, in] linears) to this
 * library's layout (HWIO, [in, out]).
 */
export function fromTorchLayout(state: Map<string, NamedArray>): Map<string, NamedArray> {
  const out = new Map<string, NamedArray>();
  for (const [name, a] of state) {
    if (a.shape.length === 4) {
      out.set(name, permute4(a, [2, 3, 1, 0])); // OIHW -> HWIO
    } else if (a.shape.length === 2) {
      const [o, i] = a.shape;
      const data = new Float32Array(a.data.length);
      for (let oo = 0; oo < o; oo++) {
        for (let ii = 0; ii < i; ii++) data[ii * o + oo] = a.data[oo * i + ii];
      }
      out.set(name, { shape: [i, o], data });
    } else out.set(name, a);
  }
  return out;
}
export type { AttentionOptions, EncodedCondition, LayerOps } from "./layer_ops.ts";
export {
  consumers,
  type GraphNode,
  type LayerGraph,
  type LayerOp,
  nodeParams,
  replayGraph,
  shapeSize,
  traceUnet,
} from "./graph.ts";
export { tfjsLayers } from "./layers.ts";
