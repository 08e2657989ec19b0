/**
 * The feature network of the sample-quality metrics, loaded offline.
 *
 * By default: the Keras ImageNet InceptionV3 shipped inside the npm package `nsfwjs` (4.4.0), cut
 * at `mixed5` (the last block whose weights are all frozen ImageNet weights; the layers after it
 * were fine-tuned for another task) and average-pooled to 768 numbers. The metrics computed on it
 * are called `kid_iv3m5` and `fid_iv3m5`: they are not comparable with published FID, which uses
 * the 2048-d pool layer of the 2015 TensorFlow graph. A user-supplied tfjs model (`eval.features`,
 * a `model.json`) replaces it, and its metrics are then called `kid` and `fid`.
 *
 * Input: uint8 RGB images (NHWC) as saved to PNG, resized once with bilinear interpolation
 * (half-pixel centres) to `resize` pixels and mapped to [-1, 1] by `x / 127.5 - 1`, the Keras
 * InceptionV3 preprocessing.
 * @module
 */
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { dirname, join, resolve } from "node:path";
import { UserError } from "../errors.ts";
import { tf } from "../tf.ts";

/** The parts one after another in a new buffer of its own (its `.buffer` holds just them). */
function concatBytes(parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
/** What identifies a feature network in a protocol record. */
export interface FeatureNetworkInfo {
  /** Human-readable name, e.g. `InceptionV3 (Keras ImageNet weights) from nsfwjs@4.4.0`. */
  name: string;
  /** Where the weights come from: `npm:nsfwjs@4.4.0` or the model.json path. */
  source: string;
  /** sha256 of the model files read (topology and weights). */
  sha256: string;
  /** The layer whose output is average-pooled (`mixed5`), or `output`. */
  layer: string;
  /** Length of one feature vector. */
  dims: number;
  /** Side in pixels every image is resized to. */
  resize: number;
  /** The resize and the pixel mapping, in words. */
  preprocessing: string;
  /** Suffix of the metric names: `_iv3m5` for the nsfwjs network, empty for a user's model. */
  metricSuffix: string;
}

/** A loaded feature network. */
export interface FeatureNetwork {
  /** What it is (recorded in every protocol). */
  info: FeatureNetworkInfo;
  /**
   * Features of `count` uint8 RGB images of `size x size` pixels (NHWC), `count x dims`
   * float32, extracted in batches of `batchSize` (default 16).
   */
  extract(
    pixels: Uint8Array,
    options: { count: number; size: number; batchSize?: number },
  ): Promise<Float32Array>;
  /** Frees the weights. */
  dispose(): void;
}

/** Options of {@link loadFeatureNetwork}. */
export interface FeatureNetworkOptions {
  /** Side every image is resized to (default 299; at least 75, the network's minimum). */
  resize?: number;
  /** A tfjs `model.json` (layers or graph model) to use instead of the nsfwjs InceptionV3. */
  modelPath?: string;
}

/** The npm package and version the default network comes from (pinned in deno.json). */
export const NSFWJS_PACKAGE = "nsfwjs@4.4.0";
/** The endpoint of the default network. */
export const DEFAULT_LAYER = "mixed5";
/** The default resize (the network's native input). */
export const DEFAULT_RESIZE = 299;
const PREPROCESSING = "bilinear resize (tf.image.resizeBilinear, half-pixel centres) of the " +
  "uint8 RGB image, then x / 127.5 - 1";

interface KerasLayer {
  name: string;
  class_name: string;
  config: Record<string, unknown>;
  inbound_nodes: [string, number, number, unknown][][];
}

interface WeightSpec {
  name: string;
  shape: number[];
  dtype: string;
  quantization?: { dtype: string; min?: number; scale?: number };
}

/** Evaluates a UMD bundle as nsfwjs ships its model files and returns its export. */
function evaluateUmd(code: string): unknown {
  const module = { exports: {} as unknown };
  new Function("module", "exports", code)(module, module.exports);
  return module.exports;
}

/** The folder of the InceptionV3 files inside the installed nsfwjs package. */
function nsfwjsModelDir(): string {
  const entry = new URL(import.meta.resolve("nsfwjs"));
  // dist/esm/index.js -> dist/models/inception_v3/
  return new URL("../models/inception_v3/", entry).pathname;
}

/** The names of `output` and every layer it depends on. */
function ancestors(layers: KerasLayer[], output: string): Set<string> {
  const byName = new Map(layers.map((l) => [l.name, l]));
  const keep = new Set<string>();
  const stack = [output];
  while (stack.length > 0) {
    const name = stack.pop()!;
    if (keep.has(name)) continue;
    const layer = byName.get(name);
    if (!layer) throw new Error(`feature network: layer ${name} not in the topology`);
    keep.add(name);
    for (const node of layer.inbound_nodes) for (const [from] of node) stack.push(from);
  }
  return keep;
}

const BYTES: Record<string, number> = { float32: 4, int32: 4, uint8: 1, uint16: 2, float16: 2 };

/** Bytes that `spec` takes in the weight data. */
function specBytes(spec: WeightSpec): number {
  const n = spec.shape.reduce((a, b) => a * b, 1);
  return n * BYTES[spec.quantization?.dtype ?? spec.dtype];
}

/**
 * The nsfwjs InceptionV3 truncated at `layer`: topology pruned to the layer's ancestors (input
 * size left free), weight specs and bytes of the kept layers only, and the sha256 of the files.
 */
async function nsfwjsArtifacts(
  layer: string,
): Promise<{ artifacts: tf.io.ModelArtifacts; sha256: string }> {
  const dir = nsfwjsModelDir();
  const hash = createHash("sha256");
  const read = async (name: string): Promise<string> => {
    let text: string;
    try {
      text = await Deno.readTextFile(join(dir, name));
    } catch (error) {
      throw new UserError(
        `cannot read the feature network file ${join(dir, name)}: ${(error as Error).message}`,
        { expected: `the npm package ${NSFWJS_PACKAGE} installed (run \`deno install\`)` },
      );
    }
    hash.update(text);
    return text;
  };
  const model = evaluateUmd(await read("model.min.js")) as {
    modelTopology: { model_config: { config: Record<string, unknown> } };
    weightsManifest: { paths: string[]; weights: WeightSpec[] }[];
  };
  const chunks: Uint8Array[] = [];
  const specs: WeightSpec[] = [];
  for (const group of model.weightsManifest) {
    for (const path of group.paths) {
      const base64 = evaluateUmd(await read(`${path}.min.js`)) as string;
      chunks.push(new Uint8Array(Buffer.from(base64, "base64")));
    }
    specs.push(...group.weights);
  }
  const all = concatBytes(chunks);

  const config = model.modelTopology.model_config.config;
  const layers = config.layers as KerasLayer[];
  const keep = ancestors(layers, layer);
  const kept = layers.filter((l) => keep.has(l.name)).map((l) =>
    l.class_name === "InputLayer"
      ? { ...l, config: { ...l.config, batch_input_shape: [null, null, null, 3] } }
      : l
  );
  const keptSpecs: WeightSpec[] = [];
  const parts: Uint8Array[] = [];
  let offset = 0;
  for (const spec of specs) {
    const bytes = specBytes(spec);
    if (keep.has(spec.name.split("/")[0])) {
      keptSpecs.push(spec);
      parts.push(all.subarray(offset, offset + bytes));
    }
    offset += bytes;
  }
  if (offset !== all.length) {
    throw new Error(`feature network: weight specs cover ${offset} of ${all.length} bytes`);
  }
  const weightData = concatBytes(parts);
  const topology = structuredClone(model.modelTopology) as Record<string, unknown>;
  delete topology.training_config;
  (topology.model_config as { config: Record<string, unknown> }).config = {
    ...config,
    layers: kept,
    output_layers: [[layer, 0, 0]],
  };
  return {
    artifacts: {
      modelTopology: topology,
      weightSpecs: keptSpecs as tf.io.WeightsManifestEntry[],
      weightData: weightData.buffer,
    },
    sha256: hash.digest("hex"),
  };
}

/** Reads a tfjs model.json and its weight files from disk. */
async function fileArtifacts(
  path: string,
): Promise<{ artifacts: tf.io.ModelArtifacts; sha256: string; graph: boolean }> {
  const where = { path: "eval.features", expected: "a tfjs model.json (layers or graph model)" };
  const hash = createHash("sha256");
  let json: {
    modelTopology?: unknown;
    format?: string;
    weightsManifest: { paths: string[]; weights: WeightSpec[] }[];
  };
  try {
    const text = await Deno.readTextFile(path);
    hash.update(text);
    json = JSON.parse(text);
  } catch (error) {
    throw new UserError(
      `cannot read the feature model ${path}: ${(error as Error).message}`,
      where,
    );
  }
  if (!json.modelTopology || !Array.isArray(json.weightsManifest)) {
    throw new UserError(`${path} has no modelTopology or weightsManifest`, where);
  }
  const chunks: Uint8Array[] = [];
  const specs: WeightSpec[] = [];
  for (const group of json.weightsManifest) {
    for (const p of group.paths) {
      const file = resolve(dirname(path), p);
      try {
        const bytes = await Deno.readFile(file);
        hash.update(bytes);
        chunks.push(bytes);
      } catch (error) {
        throw new UserError(`cannot read weight file ${file}: ${(error as Error).message}`, where);
      }
    }
    specs.push(...group.weights);
  }
  const weightData = concatBytes(chunks);
  const topology = json.modelTopology as Record<string, unknown>;
  const graph = json.format === "graph-model" || "node" in topology;
  return {
    artifacts: {
      modelTopology: topology,
      weightSpecs: specs as tf.io.WeightsManifestEntry[],
      weightData: weightData.buffer,
      format: json.format,
    },
    sha256: hash.digest("hex"),
    graph,
  };
}

/**
 * Loads the feature network from files on disk (never from a network): by default the nsfwjs
 * InceptionV3 cut at `mixed5`. Throws a {@link UserError} for a resize below 75 px or an unreadable
 * model file.
 */
export async function loadFeatureNetwork(
  options: FeatureNetworkOptions = {},
): Promise<FeatureNetwork> {
  const resize = options.resize ?? DEFAULT_RESIZE;
  if (!Number.isInteger(resize) || resize < 75 || resize > 1024) {
    throw new UserError(`resize ${resize} is out of range`, {
      path: "eval.resize",
      expected: "an integer in [75, 1024] (InceptionV3 needs at least 75 px)",
    });
  }
  let predict: (x: tf.Tensor4D) => tf.Tensor;
  let dispose: () => void;
  let info: Omit<FeatureNetworkInfo, "dims">;
  if (options.modelPath === undefined) {
    const { artifacts, sha256 } = await nsfwjsArtifacts(DEFAULT_LAYER);
    const model = await tf.loadLayersModel(tf.io.fromMemory(artifacts), { strict: true });
    predict = (x) => model.predict(x) as tf.Tensor;
    dispose = () => model.dispose();
    info = {
      name: `InceptionV3 (Keras ImageNet weights, uint8-quantised) from ${NSFWJS_PACKAGE}`,
      source: `npm:${NSFWJS_PACKAGE}`,
      sha256,
      layer: DEFAULT_LAYER,
      resize,
      preprocessing: PREPROCESSING,
      metricSuffix: "_iv3m5",
    };
  } else {
    const path = resolve(options.modelPath);
    const { artifacts, sha256, graph } = await fileArtifacts(path);
    if (graph) {
      const model = await tf.loadGraphModel(tf.io.fromMemory(artifacts));
      predict = (x) => model.predict(x) as tf.Tensor;
      dispose = () => model.dispose();
    } else {
      const model = await tf.loadLayersModel(tf.io.fromMemory(artifacts));
      predict = (x) => model.predict(x) as tf.Tensor;
      dispose = () => model.dispose();
    }
    info = {
      name: `${graph ? "graph" : "layers"} model ${path}`,
      source: path,
      sha256,
      layer: "output",
      resize,
      preprocessing: PREPROCESSING,
      metricSuffix: "",
    };
  }
  const features = (pixels: tf.Tensor4D): tf.Tensor2D =>
    tf.tidy(() => {
      const x = tf.image.resizeBilinear(pixels.toFloat(), [resize, resize], false, true)
        .div(127.5).sub(1) as tf.Tensor4D;
      const y = predict(x);
      return (y.rank === 4 ? y.mean([1, 2]) : y.reshape([y.shape[0], -1])) as tf.Tensor2D;
    });
  const probe = features(tf.zeros([1, 8, 8, 3], "int32"));
  const dims = probe.shape[1];
  probe.dispose();
  return {
    info: { ...info, dims },
    async extract(pixels, { count, size, batchSize = 16 }) {
      const imageBytes = size * size * 3;
      if (pixels.length < count * imageBytes) {
        throw new RangeError(`extract: ${pixels.length} bytes for ${count} images of ${size} px`);
      }
      const out = new Float32Array(count * dims);
      for (let start = 0; start < count; start += batchSize) {
        const n = Math.min(batchSize, count - start);
        const slice = pixels.subarray(start * imageBytes, (start + n) * imageBytes);
        const input = tf.tensor4d(Int32Array.from(slice), [n, size, size, 3], "int32");
        const y = features(input);
        input.dispose();
        out.set(await y.data() as Float32Array, start * dims);
        y.dispose();
      }
      return out;
    },
    dispose,
  };
}
