/**
 * The engine's sampling plan (src/gpu/engine): `predict` equals the tfjs model's `predict`
 * within 1e-4 for each option family of the network (attention kinds at the levels and in the
 * middle, residual blocks, the conditional network with tau, time projection, cross-attention
 * and the null mix), for batches larger than the plan's (in pieces) and equal to it.
 */
import assert from "node:assert/strict";
import { initBackend } from "../../src/backend/mod.ts";
import { GpuEngine } from "../../src/gpu/engine/mod.ts";
import { tf } from "../../src/tf.ts";
import { assertClose, gpu, noGpu, testData } from "./device.ts";
import { FAMILIES, familyModel } from "./engine_cases.ts";

await initBackend("cpu");

const SIZE = 8;
const CHANNELS = 3;

for (const [name, body] of Object.entries(FAMILIES)) {
  Deno.test({
    name: `engine predict (${name}) equals the tfjs model within 1e-4`,
    ignore: noGpu,
    fn: async () => {
      const { model, params } = await familyModel(body);
      await using engine = await GpuEngine.create({
        gpu: gpu!,
        net: model.net,
        image: { size: SIZE, channels: CHANNELS },
        sampleBatch: 2,
      });
      engine.setParams(params);
      const conditional = model.net.condition !== undefined;
      for (const n of [3, 2]) {
        const x = testData(n * SIZE * SIZE * CHANNELS, 7 + n);
        const t = [1, 40, 7].slice(0, n);
        const condition = conditional
          ? {
            labels: new Int32Array([0, 1, 2, 0, 1, 1]).slice(0, 2 * n),
            drop: new Uint8Array([0, 1, 0]).slice(0, n),
          }
          : undefined;
        const want = tf.tidy(() =>
          model.predict(tf.tensor4d(x, [n, SIZE, SIZE, CHANNELS]), tf.tensor1d(t), { condition })
            .dataSync()
        );
        const got = await engine.predict(x, t, { condition });
        assert.equal(got.length, want.length);
        assertClose(got, want, 1e-4, `${name}, ${n} examples`);
        if (conditional && n === 2) {
          // Without labels: the null embedding for every example.
          const uncond = tf.tidy(() =>
            model.predict(tf.tensor4d(x, [n, SIZE, SIZE, CHANNELS]), tf.tensor1d(t)).dataSync()
          );
          assertClose(await engine.predict(x, t), uncond, 1e-4, `${name}, unconditional`);
        }
      }
      const back = await engine.params();
      for (const [k, a] of params) assert.deepEqual(back.get(k)!.data, a.data, k);
      model.dispose();
    },
  });
}
