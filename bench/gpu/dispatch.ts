/**
 * What one kernel launch costs on the active backend: a chain of small element-wise ops, with a
 * tensor operand and with a JavaScript number (a scalar tensor uploaded each time), timed per op.
 * On WebGPU this per-launch cost, not arithmetic, bounds a training step of a small U-Net.
 *
 * ```sh
 * deno run -A bench/gpu/dispatch.ts --backend webgpu [--ops 2000] [--size 4096]
 * ```
 * @module
 */
import { parseArgs } from "node:util";
import { type BackendName, initBackend } from "../../src/backend/mod.ts";
import { tf } from "../../src/tf.ts";

/** Milliseconds per op of `ops` chained calls of `step`, after one warm-up chain. */
export async function timeChain(
  step: (x: tf.Tensor) => tf.Tensor,
  options: { ops: number; size: number },
): Promise<number> {
  const run = async (): Promise<number> => {
    const start = performance.now();
    const y = tf.tidy(() => {
      let x: tf.Tensor = tf.ones([options.size]);
      for (let i = 0; i < options.ops; i++) x = step(x);
      return x;
    });
    await y.data();
    y.dispose();
    return (performance.now() - start) / options.ops;
  };
  await run();
  return await run();
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      backend: { type: "string", default: "webgpu" },
      ops: { type: "string", default: "2000" },
      size: { type: "string", default: "4096" },
    },
  });
  const info = await initBackend(values.backend as BackendName);
  const options = { ops: Number(values.ops), size: Number(values.size) };
  const other = tf.fill([options.size], 1.0001);
  const tensor = await timeChain((x) => tf.mul(x, other), options);
  const scalar = await timeChain((x) => tf.mul(x, 1.0001), options);
  console.log(
    `${info.name}${info.adapter ? ` (${info.adapter})` : ""}: ${options.ops} chained ops on ` +
      `${options.size} floats: ${(tensor * 1000).toFixed(0)} us per op with a tensor operand, ` +
      `${(scalar * 1000).toFixed(0)} us with a JS number (scalar upload)`,
  );
}
