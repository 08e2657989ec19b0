/** The kernel plumbing: a WGSL kernel runs on the device and reads back what it wrote. */
import assert from "node:assert/strict";
import { declareBindings, f32, type KernelSpec, linearWorkgroups } from "../../src/gpu/mod.ts";
import { runKernel } from "../../src/gpu/testing.ts";
import { device, noGpu, testData } from "./device.ts";

Deno.test("linearWorkgroups folds past 65535 groups and covers every thread", () => {
  assert.deepEqual(linearWorkgroups(1000, 256), [4, 1, 1]);
  const [x, y] = linearWorkgroups(65536 * 256 + 1, 256);
  assert.ok(x <= 65535 && x * y * 256 >= 65536 * 256 + 1);
  assert.equal(f32(1), "1.0");
  assert.equal(f32(0.5), "0.5");
});

Deno.test({
  name: "a kernel with baked shapes runs on the adapter (axpy over a folded grid)",
  ignore: noGpu,
  fn: async () => {
    const n = 70_001;
    const size = 64;
    const workgroups = linearWorkgroups(n, size);
    const bindings = [
      { name: "x", access: "read" as const, length: n },
      { name: "y", access: "read_write" as const, length: n },
    ];
    const spec: KernelSpec = {
      name: "test.axpy",
      bindings,
      workgroups,
      code: `${declareBindings(bindings)}
@compute @workgroup_size(${size})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x + gid.y * ${workgroups[0] * size}u;
  if (i >= ${n}u) { return; }
  y[i] = ${f32(2.5)} * x[i] + y[i];
}`,
    };
    const x = testData(n, 3);
    const y0 = testData(n, 4);
    const { y } = await runKernel(device(), spec, { x, y: y0 });
    for (const i of [0, 1, 65535, n - 1]) {
      assert.equal(y[i], Math.fround(Math.fround(2.5 * x[i]) + y0[i]));
    }
  },
});
