/**
 * What one WebGPU dispatch costs from Deno, host and wall time, in the patterns an engine can
 * use (../shared/reference/gpu/wgpu_dispatch_bench.ts, kept here so that bench/gpu/run.sh runs it
 * first on a lent GPU): tfjs-style (uniforms and a bind group per dispatch), an encoder and a
 * submit per kernel, a bind group per dispatch in one pass, and the static plan (pipelines and
 * bind groups made once, one pass, one submit) that src/gpu's engine uses.
 *
 * ```sh
 * XDG_RUNTIME_DIR=/tmp deno run -A bench/gpu/dispatch.ts [dispatches=3470] [elements=16384]
 * ```
 * @module
 */
// wall us/dispatch until onSubmittedWorkDone.
const N = Number(Deno.args[0] ?? 3470), E = Number(Deno.args[1] ?? 16384);
const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
const ai = adapter!.info;
console.log("adapter:", ai.vendor, ai.architecture, ai.device, ai.description);
const device = await adapter!.requestDevice();
const code = `@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> b: array<f32>;
@group(0) @binding(2) var<uniform> u: vec4<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  if (g.x < arrayLength(&b)) { b[g.x] = a[g.x] * 0.999 + u.x; } }`;
const module = device.createShaderModule({ code });
const pipeline = device.createComputePipeline({
  layout: "auto",
  compute: { module, entryPoint: "main" },
});
const layout = pipeline.getBindGroupLayout(0);
const NB = 64;
const bufs = Array.from(
  { length: NB },
  () =>
    device.createBuffer({ size: E * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST }),
);
const ubufs = Array.from(
  { length: NB },
  () => device.createBuffer({ size: 256, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST }),
);
const WG = Math.ceil(E / 64);
const bgOf = (i: number, l: GPUBindGroupLayout = layout) =>
  device.createBindGroup({
    layout: l,
    entries: [
      { binding: 0, resource: { buffer: bufs[i % NB] } },
      { binding: 1, resource: { buffer: bufs[(i + 1) % NB] } },
      { binding: 2, resource: { buffer: ubufs[i % NB] } },
    ],
  });
const pre = Array.from({ length: N }, (_, i) => bgOf(i));
const ud = new Float32Array(4);
const med = (a: number[]) => a.slice().sort((x, y) => x - y)[a.length >> 1];
async function run(name: string, fn: () => void, reps = 5) {
  const host: number[] = [], wall: number[] = [];
  for (let r = 0; r <= reps; r++) {
    const t0 = performance.now();
    fn();
    const t1 = performance.now();
    await device.queue.onSubmittedWorkDone();
    const t2 = performance.now();
    if (r) {
      host.push((t1 - t0) * 1e3 / N);
      wall.push((t2 - t0) * 1e3 / N);
    }
  }
  console.log(
    `${name}: host ${med(host).toFixed(2)} us/dispatch, wall ${
      med(wall).toFixed(2)
    } us/dispatch (N=${N}, ${E} floats)`,
  );
}
await run(
  "tfjs-style (writeBuffer+getBindGroupLayout+createBindGroup+3 pass calls, submit every 15)",
  () => {
    let enc = device.createCommandEncoder(), pass = enc.beginComputePass(), k = 0;
    for (let i = 0; i < N; i++) {
      ud[0] = 1;
      device.queue.writeBuffer(ubufs[i % NB], 0, ud);
      const bg = bgOf(i, pipeline.getBindGroupLayout(0));
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bg);
      pass.dispatchWorkgroups(WG);
      if (++k === 15) {
        pass.end();
        device.queue.submit([enc.finish()]);
        enc = device.createCommandEncoder();
        pass = enc.beginComputePass();
        k = 0;
      }
    }
    pass.end();
    device.queue.submit([enc.finish()]);
  },
);
await run("jax-js-style (encoder+createBindGroup+pass+submit per kernel)", () => {
  for (let i = 0; i < N; i++) {
    const enc = device.createCommandEncoder();
    const bg = bgOf(i, pipeline.getBindGroupLayout(0));
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bg);
    pass.dispatchWorkgroups(WG);
    pass.end();
    device.queue.submit([enc.finish()]);
  }
});
await run("createBindGroup per dispatch, one pass, one submit", () => {
  const enc = device.createCommandEncoder(), pass = enc.beginComputePass();
  for (let i = 0; i < N; i++) {
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bgOf(i));
    pass.dispatchWorkgroups(WG);
  }
  pass.end();
  device.queue.submit([enc.finish()]);
});
await run("pre-created bind groups+pipeline, one pass, one submit (static plan)", () => {
  const enc = device.createCommandEncoder(), pass = enc.beginComputePass();
  for (let i = 0; i < N; i++) {
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, pre[i]);
    pass.dispatchWorkgroups(WG);
  }
  pass.end();
  device.queue.submit([enc.finish()]);
});
