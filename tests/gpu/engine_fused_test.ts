/**
 * The engine's fused weight-and-bias gradients (src/gpu/engine/fused.ts) equal the conv and
 * linear references (../kernels) in float64 within 1e-5, the bias after the weight's aligned
 * size and the padding between them untouched: a conv 3x3 and a 1x1 split over pixel chunks
 * (two passes), a small conv in one pass, a linear layer.
 */
import assert from "node:assert/strict";
import { convWeightBiasGrad, linearWeightBiasGrad } from "../../src/gpu/engine/fused.ts";
import { alignFloats } from "../../src/gpu/engine/layout.ts";
import type { KernelSpec } from "../../src/gpu/kernel.ts";
import { convBiasGradRef, type ConvShape, convWeightGradRef } from "../../src/gpu/kernels/conv.ts";
import { linearBiasGradRef, linearWeightGradRef } from "../../src/gpu/kernels/matmul.ts";
import { runKernel } from "../../src/gpu/testing.ts";
import { assertClose, device, noGpu, testData } from "./device.ts";

/** Runs a one- or two-pass spec list, carrying `dwb` (and `tmp`) between the passes. */
async function run(
  specs: KernelSpec | KernelSpec[],
  inputs: Record<string, Float32Array<ArrayBuffer>>,
): Promise<Float32Array> {
  const list = Array.isArray(specs) ? specs : [specs];
  const data = { ...inputs };
  for (const spec of list) {
    const out = await runKernel(device(), spec, data);
    for (const [k, v] of Object.entries(out)) data[k] = v as Float32Array<ArrayBuffer>;
  }
  return data.dwb;
}

const CONVS: [ConvShape, number][] = [
  [{ batch: 3, height: 19, width: 19, cin: 3, cout: 5, k: 3 }, 2],
  [{ batch: 2, height: 23, width: 25, cin: 7, cout: 6, k: 1 }, 2],
  [{ batch: 3, height: 5, width: 7, cin: 3, cout: 5, k: 3 }, 1],
];

for (const [s, passes] of CONVS) {
  Deno.test({
    name: `convWeightBiasGrad ${JSON.stringify(s)} equals the references (${passes} pass(es))`,
    ignore: noGpu,
    fn: async () => {
      const pixels = s.batch * s.height * s.width;
      const x = testData(pixels * s.cin, 1);
      const dy = testData(pixels * s.cout, 2);
      const specs = convWeightBiasGrad(s);
      assert.equal(Array.isArray(specs) ? specs.length : 1, passes);
      const size = s.k * s.k * s.cin * s.cout;
      const sentinel = new Float32Array(alignFloats(size) + s.cout).fill(7);
      const dwb = await run(specs, { x, dy, dwb: sentinel });
      assertClose(dwb.subarray(0, size), convWeightGradRef(x, dy, s), 1e-5, "dw");
      assertClose(dwb.subarray(alignFloats(size)), convBiasGradRef(dy, s), 1e-5, "db");
      for (let i = size; i < alignFloats(size); i++) assert.equal(dwb[i], 7, `padding ${i}`);
    },
  });
}

Deno.test({
  name: "linearWeightBiasGrad equals the references",
  ignore: noGpu,
  fn: async () => {
    const s = { rows: 5, cin: 7, cout: 9 };
    const x = testData(s.rows * s.cin, 3);
    const dy = testData(s.rows * s.cout, 4);
    const size = s.cin * s.cout;
    const dwb = await run(linearWeightBiasGrad(s), {
      x,
      dy,
      dwb: new Float32Array(alignFloats(size) + s.cout),
    });
    assertClose(dwb.subarray(0, size), linearWeightGradRef(x, dy, s), 1e-5, "dw");
    assertClose(dwb.subarray(alignFloats(size)), linearBiasGradRef(dy, s), 1e-5, "db");
  },
});
