/**
 * The attribute judge: a small convolutional classifier with one softmax head per attribute,
 * trained on labelled real images (avatar attributes, Cartoon Set attributes, ImageFolder
 * classes), with its held-out accuracy per attribute. It scores generated images:
 * - unconditional runs: the total variation distance, per attribute, between the distribution of
 *   its predictions on the samples and on held-out real images ({@link attributeDistance});
 * - conditional runs: its accuracy on the attributes the samples were asked for
 *   ({@link judgeAccuracy}).
 *
 * The judge works on a neutral {@link LabelledImages}; {@link labelledFromDataset} adapts a
 * loaded dataset. Trained judges are cached by dataset content hash and judge settings.
 * @module
 */
import { join } from "node:path";
import type { Attribute, Dataset, RgbImages } from "../data/mod.ts";
import { UserError } from "../errors.ts";
import { sha256Hex, writeFileAtomic } from "../io/files.ts";
import { deriveRng } from "../rng.ts";
import { tf } from "../tf.ts";
import { datasetContentHash } from "./samples_vs_reference.ts";

/** One categorical attribute: its name, its number of values and, when known, their names. */
export type AttributeDescriptor = Attribute;

/** Labelled uint8 RGB images. */
export interface LabelledImages extends RgbImages {
  /** The attributes. */
  attributes: AttributeDescriptor[];
  /** One array per attribute: the label of each image, in `[0, count)`. */
  labels: Int32Array[];
}

/** Settings of the judge (part of its cache key). */
export interface JudgeSettings {
  /** Seed of the weights, the split and the batch order. */
  seed: number;
  /** Fraction of the images held out for the accuracy (default 0.2). */
  heldOut?: number;
  /** Optimizer steps (default 2000; whole epochs over the training part, the last one cut). */
  steps?: number;
  /** Batch size (default 64). */
  batchSize?: number;
  /** Base width of the convolutions (default 16). */
  width?: number;
}

/** A trained judge. */
export interface Judge {
  /** The attributes it predicts. */
  attributes: AttributeDescriptor[];
  /** The image size it takes. */
  size: number;
  /** Held-out accuracy per attribute. */
  accuracy: Record<string, number>;
  /** Accuracy of always predicting the most frequent training value, per attribute. */
  chance: Record<string, number>;
  /** Held-out images used for the accuracy. */
  heldOutCount: number;
  /** Predicted label distribution on the held-out real images, per attribute. */
  realDistribution: Float64Array[];
  /** Whether it came from the cache. */
  cached: boolean;
  /** The labels it predicts for `count` images of its size, one array per attribute. */
  predict(images: Uint8Array, count: number): Promise<Int32Array[]>;
  /** Frees the weights. */
  dispose(): void;
}

/**
 * The labelled view of a dataset with labels. Throws a {@link UserError} when the dataset has
 * none (only labelled sources can be judged).
 */
export function labelledFromDataset(dataset: Dataset): LabelledImages {
  const labels = dataset.labels;
  if (!labels || labels.attributes.length === 0) {
    throw new UserError(`the dataset (${dataset.source}) has no labels to judge`, {
      path: "eval.metrics",
      expected: "a labelled dataset (avatars, or a folder with one subfolder per class)",
    });
  }
  return {
    count: dataset.count,
    size: dataset.size,
    pixels: dataset.pixels,
    attributes: labels.attributes,
    labels: labels.labels,
  };
}

function buildModel(
  size: number,
  attributes: AttributeDescriptor[],
  options: { width: number; seed: number },
): tf.LayersModel {
  let seed = options.seed;
  const init = () => tf.initializers.glorotUniform({ seed: seed++ });
  const input = tf.input({ shape: [size, size, 3] });
  let x: tf.SymbolicTensor = input;
  const w = options.width;
  const convs: [number, number][] = [[w, 1], [w, 2], [2 * w, 1], [2 * w, 2], [4 * w, 1]];
  for (const [filters, strides] of convs) {
    x = tf.layers.conv2d({
      filters,
      kernelSize: 3,
      strides,
      padding: "same",
      activation: "relu",
      kernelInitializer: init(),
    }).apply(x) as tf.SymbolicTensor;
  }
  x = tf.layers.globalAveragePooling2d({}).apply(x) as tf.SymbolicTensor;
  x = tf.layers.dense({ units: 8 * w, activation: "relu", kernelInitializer: init() })
    .apply(x) as tf.SymbolicTensor;
  const outputs = attributes.map((a, i) =>
    tf.layers.dense({
      units: a.count,
      activation: "softmax",
      name: `head_${i}`,
      kernelInitializer: init(),
    }).apply(x) as tf.SymbolicTensor
  );
  return tf.model({ inputs: input, outputs });
}

function inputTensor(images: Uint8Array, indices: ArrayLike<number>, size: number): tf.Tensor4D {
  const length = size * size * 3;
  const out = new Float32Array(indices.length * length);
  for (let i = 0; i < indices.length; i++) {
    const src = indices[i] * length;
    for (let k = 0; k < length; k++) out[i * length + k] = images[src + k] / 127.5 - 1;
  }
  return tf.tensor4d(out, [indices.length, size, size, 3]);
}

async function predictLabels(
  model: tf.LayersModel,
  images: Uint8Array,
  options: { count: number; size: number; heads: number },
): Promise<Int32Array[]> {
  const { count, size, heads } = options;
  const out = Array.from({ length: heads }, () => new Int32Array(count));
  for (let start = 0; start < count; start += 256) {
    const n = Math.min(256, count - start);
    const idx = Int32Array.from({ length: n }, (_, i) => start + i);
    const preds = tf.tidy(() => {
      const x = inputTensor(images, idx, size);
      const y = model.predict(x);
      return (Array.isArray(y) ? y : [y]).map((t) => t.argMax(-1));
    });
    for (let h = 0; h < heads; h++) {
      out[h].set((await preds[h].data()) as Int32Array, start);
      preds[h].dispose();
    }
  }
  return out;
}

function distribution(labels: Int32Array, values: number): Float64Array {
  const p = new Float64Array(values);
  for (const v of labels) p[v] += 1 / labels.length;
  return p;
}

const DEFAULT_CACHE = new URL("../../.cache/judge", import.meta.url).pathname;

interface CacheRecord {
  accuracy: Record<string, number>;
  chance: Record<string, number>;
  heldOutCount: number;
  realDistribution: number[][];
  modelTopology: unknown;
  weightSpecs: tf.io.WeightsManifestEntry[];
}

/**
 * Trains a judge on `data` (or loads the one cached for this content and these settings):
 * a seeded split holds out `heldOut` of the images, the rest trains the network for `epochs`
 * with Adam; the accuracy per attribute is measured on the held-out images.
 */
export async function trainJudge(
  data: LabelledImages,
  options: JudgeSettings & { cacheDir?: string; log?: (line: string) => void },
): Promise<Judge> {
  const settings = {
    seed: options.seed,
    heldOut: options.heldOut ?? 0.2,
    steps: options.steps ?? 2000,
    batchSize: options.batchSize ?? 64,
    width: options.width ?? 16,
  };
  const { count, size, attributes } = data;
  const heldOutCount = Math.max(1, Math.round(count * settings.heldOut));
  if (count - heldOutCount < 2) {
    throw new UserError(`${count} labelled images are too few to train the judge`, {
      expected: "at least 3 images",
    });
  }
  const key = sha256Hex(JSON.stringify({
    content: datasetContentHash({ pixels: data.pixels, size, count }),
    labels: data.labels.map((l) => sha256Hex(new Uint8Array(l.buffer, l.byteOffset, l.byteLength))),
    attributes,
    settings,
  })).slice(0, 24);
  const dir = join(options.cacheDir ?? DEFAULT_CACHE, key);
  const heads = attributes.length;
  const wrap = (model: tf.LayersModel, record: CacheRecord, cached: boolean): Judge => ({
    attributes,
    size,
    accuracy: record.accuracy,
    chance: record.chance,
    heldOutCount: record.heldOutCount,
    realDistribution: record.realDistribution.map((p) => Float64Array.from(p)),
    cached,
    predict: (images, n) => {
      if (images.length < n * size * size * 3 || images.length % (size * size * 3) !== 0) {
        throw new RangeError(`judge: ${images.length} bytes are not ${n} images of ${size} px`);
      }
      return predictLabels(model, images, { count: n, size, heads });
    },
    dispose: () => model.dispose(),
  });
  try {
    const record = JSON.parse(await Deno.readTextFile(join(dir, "judge.json"))) as CacheRecord;
    const weights = await Deno.readFile(join(dir, "weights.bin"));
    const model = await tf.loadLayersModel(tf.io.fromMemory({
      modelTopology: record.modelTopology as tf.io.ModelArtifacts["modelTopology"],
      weightSpecs: record.weightSpecs,
      weightData: weights.slice().buffer,
    }));
    return wrap(model, record, true);
  } catch {
    // not cached: train
  }

  const order = deriveRng(settings.seed, "judge/split").permutation(count);
  const test = order.subarray(0, heldOutCount);
  const train = order.subarray(heldOutCount);
  const model = buildModel(size, attributes, settings);
  model.compile({
    optimizer: tf.train.adam(2e-3),
    loss: attributes.map(() => "sparseCategoricalCrossentropy"),
  });
  const log = options.log ?? (() => {});
  const perEpoch = Math.ceil((train.length - 1) / settings.batchSize);
  const epochs = Math.ceil(settings.steps / perEpoch);
  let step = 0;
  for (let epoch = 0; epoch < epochs; epoch++) {
    const perm = deriveRng(settings.seed, `judge/order/epoch-${epoch}`).permutation(train.length);
    let lossSum = 0;
    let batches = 0;
    for (
      let start = 0;
      start + 1 < train.length && step < settings.steps;
      start += settings.batchSize, step++
    ) {
      const idx = Array.from(
        perm.subarray(start, Math.min(start + settings.batchSize, train.length)),
        (p) => train[p],
      );
      const x = inputTensor(data.pixels, idx, size);
      const ys = data.labels.map((l) =>
        tf.tensor2d(Float32Array.from(idx, (i) => l[i]), [idx.length, 1])
      );
      const loss = await model.trainOnBatch(x, ys);
      x.dispose();
      ys.forEach((y) => y.dispose());
      lossSum += Array.isArray(loss) ? loss[0] : loss;
      batches++;
      await new Promise((r) => setTimeout(r, 0));
    }
    if ((epoch + 1) % Math.max(1, Math.round(epochs / 5)) === 0 || epoch === epochs - 1) {
      log(
        `  judge: epoch ${epoch + 1}/${epochs} (step ${step}) loss ${
          (lossSum / batches).toFixed(4)
        }`,
      );
    }
  }
  const testImages = new Uint8Array(heldOutCount * size * size * 3);
  test.forEach((k, i) =>
    testImages.set(
      data.pixels.subarray(k * size * size * 3, (k + 1) * size * size * 3),
      i * size * size * 3,
    )
  );
  const predicted = await predictLabels(model, testImages, { count: heldOutCount, size, heads });
  const accuracy: Record<string, number> = {};
  const chance: Record<string, number> = {};
  attributes.forEach((a, h) => {
    let right = 0;
    test.forEach((k, i) => (right += predicted[h][i] === data.labels[h][k] ? 1 : 0));
    accuracy[a.name] = right / heldOutCount;
    const counts = new Float64Array(a.count);
    for (const k of train) counts[data.labels[h][k]]++;
    chance[a.name] = Math.max(...counts) / train.length;
  });
  const record: CacheRecord = {
    accuracy,
    chance,
    heldOutCount,
    realDistribution: attributes.map((a, h) => [...distribution(predicted[h], a.count)]),
    modelTopology: null,
    weightSpecs: [],
  };
  let weightData: ArrayBuffer | undefined;
  await model.save(tf.io.withSaveHandler((artifacts) => {
    record.modelTopology = artifacts.modelTopology;
    record.weightSpecs = artifacts.weightSpecs ?? [];
    weightData = artifacts.weightData as ArrayBuffer;
    return Promise.resolve({
      modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: "JSON" },
    });
  }));
  await Deno.mkdir(dir, { recursive: true });
  await writeFileAtomic(join(dir, "weights.bin"), new Uint8Array(weightData!));
  await writeFileAtomic(join(dir, "judge.json"), JSON.stringify(record));
  return wrap(model, record, false);
}

/**
 * Per attribute, the total variation distance ½ Σ_v |p(v) − q(v)| between the judge's predicted
 * label distribution on `count` generated images and on the held-out real images, and their mean.
 */
export async function attributeDistance(
  judge: Judge,
  images: Uint8Array,
  count: number,
): Promise<{ perAttribute: Record<string, number>; mean: number }> {
  const predicted = await judge.predict(images, count);
  const perAttribute: Record<string, number> = {};
  judge.attributes.forEach((a, h) => {
    const p = distribution(predicted[h], a.count);
    const q = judge.realDistribution[h];
    let tv = 0;
    for (let v = 0; v < p.length; v++) tv += Math.abs(p[v] - q[v]) / 2;
    perAttribute[a.name] = tv;
  });
  const values = Object.values(perAttribute);
  return { perAttribute, mean: values.reduce((s, v) => s + v, 0) / values.length };
}

/**
 * For conditional generation: the fraction of `count` images whose predicted label equals the
 * requested one, for each attribute that `requested` names (by attribute name).
 */
export async function judgeAccuracy(
  judge: Judge,
  images: { pixels: Uint8Array; count: number },
  requested: Record<string, Int32Array>,
): Promise<Record<string, number>> {
  const predicted = await judge.predict(images.pixels, images.count);
  const out: Record<string, number> = {};
  for (const [name, wanted] of Object.entries(requested)) {
    const h = judge.attributes.findIndex((a) => a.name === name);
    if (h < 0) throw new RangeError(`the judge has no attribute ${name}`);
    let right = 0;
    for (let i = 0; i < images.count; i++) right += predicted[h][i] === wanted[i] ? 1 : 0;
    out[name] = right / images.count;
  }
  return out;
}
