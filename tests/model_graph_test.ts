/**
 * The traced layer graph (src/model/graph.ts): replayed through tfjs it computes exactly what
 * `Unet.forward` computes, for every option family of the network; it reads each parameter
 * once; its shapes are those of the tensors.
 */
import assert from "node:assert/strict";
import { ModelSchema } from "../schemas/experiment.ts";
import { initBackend } from "../src/backend/mod.ts";
import {
  createModel,
  encodedWidth,
  encodeLabels,
  nodeParams,
  replayGraph,
  tfjsLayers,
  traceUnet,
} from "../src/model/mod.ts";
import { deriveRng } from "../src/rng.ts";
import { tf } from "../src/tf.ts";

await initBackend("cpu");

const SMALL = { width: 8, multipliers: [1, 2] };
const CASES: Record<string, unknown> = {
  reference: SMALL,
  "full attention, 3 res blocks, linear middle": {
    ...SMALL,
    resBlocks: 3,
    attention: { kind: "full", levels: [1], heads: 2, dimHead: 3 },
    middleAttention: "linear",
  },
  "no attention, dropout": {
    width: 6,
    multipliers: [1, 2, 2],
    groups: 3,
    attention: { kind: "none" },
    middleAttention: "none",
    dropout: 0.2,
  },
  conditional: {
    ...SMALL,
    conditioning: {
      attributes: ["hair", "glasses"],
      layers: 2,
      width: 8,
      tokens: 2,
      time: true,
      crossAttention: { levels: [1], middle: true, heads: 2, dimHead: 4 },
    },
  },
};

for (const [name, body] of Object.entries(CASES)) {
  Deno.test(`layer graph (${name}): replayed in tfjs it equals Unet.forward, bit for bit`, () => {
    const config = ModelSchema.parse(body);
    const labelSizes = config.conditioning ? [3, 2] : undefined;
    const model = createModel(config, { rng: deriveRng(1, "model/init"), labelSizes });
    const batch = 3;
    const size = 8;
    const x = tf.randomNormal([batch, size, size, 3], 0, 1, "float32", 5) as tf.Tensor4D;
    const t = tf.tensor1d([1, 40, 7]);
    const lookup = (n: string) => model.params.get(n)!;
    for (const training of [false, true]) {
      const graph = traceUnet(model.net, { batch, size, channels: 3, training });
      // Every parameter is read by exactly one node.
      const reads = graph.nodes.flatMap((n) => nodeParams(n)).sort();
      assert.deepEqual(reads, graph.params.map((p) => p.name).sort());
      const labels = new Int32Array([0, 1, 2, 0, 1, 1]);
      const drop = new Uint8Array([0, 1, 0]);
      const condition = config.conditioning ? { labels, drop } : undefined;
      const rngName = `train/dropout/${name}`;
      const want = model.predict(x, t, {
        condition,
        dropoutRng: training ? deriveRng(2, rngName) : undefined,
      });
      const shape = model.net.condition;
      const got = replayGraph(
        graph,
        tfjsLayers(lookup, {
          dropoutRng: training ? deriveRng(2, rngName) : undefined,
        }),
        {
          x,
          t,
          ...(shape
            ? {
              labels: tf.tensor2d(encodeLabels(labels, shape), [batch, encodedWidth(shape)]),
              drop: tf.tensor2d(Float32Array.from(drop), [batch, 1]),
            }
            : {}),
        },
      );
      assert.deepEqual(got.shape, graph.nodes[graph.output].shape);
      assert.deepEqual(got.dataSync(), want.dataSync(), `training ${training}`);
      const dropouts = graph.nodes.filter((n) => n.op === "dropout").length;
      const rate = config.dropout;
      // One per residual block: 3 levels x 2 down, 3 x 2 up, 2 in the middle, the final one.
      assert.equal(dropouts, training && rate > 0 ? 3 * 2 + 3 * 2 + 2 + 1 : 0);
    }
    model.dispose();
  });
}

Deno.test("layer graph of the course U-Net: its size and the shapes of its nodes", () => {
  const model = createModel(ModelSchema.parse({}), { rng: deriveRng(0, "model/init") });
  const graph = traceUnet(model.net, { batch: 32, size: 32, channels: 3, training: true });
  const counts = new Map<string, number>();
  for (const n of graph.nodes) counts.set(n.op, (counts.get(n.op) ?? 0) + 1);
  // 4 levels x (2 down + 2 up) residual blocks, 2 in the middle, the final one: 2 norms each;
  // linear attention at the 8 levels (pre-norm and to_out's norm), full in the middle (pre-norm).
  assert.equal(counts.get("scaleShift"), 4 * 4 + 2 + 1);
  assert.equal(counts.get("linearAttention"), 8);
  assert.equal(counts.get("attention"), 1);
  assert.equal(counts.get("groupNorm"), 2 * 19 + 2 * 8 + 1);
  assert.equal(counts.get("dropout"), undefined); // the reference has no dropout
  const out = graph.nodes[graph.output];
  assert.deepEqual(out.shape, [32, 32, 32, 3]);
  assert.equal(out.op, "conv");
  model.dispose();
});
