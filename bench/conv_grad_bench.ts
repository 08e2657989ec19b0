/**
 * Micro-benchmark of the conv2d gradients on the wasm backend: tfjs-backend-wasm's own naive
 * `Conv2DBackpropInput` and a naive JavaScript filter gradient (what the cpu backend does)
 * against the XNNPACK-based kernels of `src/backend/wasm_kernels.ts`, plus an im2col + matMul
 * filter gradient as an alternative. Run: `deno run -A bench/conv_grad_bench.ts`.
 * @module
 */
import { tf } from "../src/tf.ts";
import { initBackend } from "../src/backend/mod.ts";
import { deriveRng } from "../src/rng.ts";

interface Shape {
  name: string;
  x: [number, number, number, number];
  filter: [number, number, number, number];
  stride: number;
}

interface WasmBackend {
  disposeData(dataId: object): boolean;
  typedArrayFromHeap(info: tf.TensorInfo): Float32Array;
}

const SHAPES: Shape[] = [
  { name: "b32 32x32 16->16 3x3 s1", x: [32, 32, 32, 16], filter: [3, 3, 16, 16], stride: 1 },
  { name: "b32 8x8 64->64 3x3 s1", x: [32, 8, 8, 64], filter: [3, 3, 64, 64], stride: 1 },
  { name: "b32 32x32 16->16 3x3 s2", x: [32, 32, 32, 16], filter: [3, 3, 16, 16], stride: 2 },
  { name: "b32 16x16 32->32 3x3 s1", x: [32, 16, 16, 32], filter: [3, 3, 32, 32], stride: 1 },
];

function median(f: () => void, runs = 7): number {
  f();
  f();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    f();
    times.push(performance.now() - t);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(runs / 2)];
}

/** dW[kh, kw, c, o] = sum over b, y, x of xpad[b, y*s + kh, x*s + kw, c] * dy[b, y, x, o]. */
function naiveFilterGrad(
  x: Float32Array,
  dy: Float32Array,
  s: Shape,
  out: { oh: number; ow: number; top: number; left: number },
): Float32Array {
  const [b, h, w, cin] = s.x;
  const [kh, kw, , cout] = s.filter;
  const dw = new Float32Array(kh * kw * cin * cout);
  for (let i = 0; i < kh; i++) {
    for (let j = 0; j < kw; j++) {
      for (let n = 0; n < b; n++) {
        for (let y = 0; y < out.oh; y++) {
          const xr = y * s.stride + i - out.top;
          if (xr < 0 || xr >= h) continue;
          for (let xc = 0; xc < out.ow; xc++) {
            const xcol = xc * s.stride + j - out.left;
            if (xcol < 0 || xcol >= w) continue;
            const xo = ((n * h + xr) * w + xcol) * cin;
            const dyo = ((n * out.oh + y) * out.ow + xc) * cout;
            for (let c = 0; c < cin; c++) {
              const xv = x[xo + c];
              const base = ((i * kw + j) * cin + c) * cout;
              for (let o = 0; o < cout; o++) dw[base + o] += xv * dy[dyo + o];
            }
          }
        }
      }
    }
  }
  return dw;
}

const original = await import("@tensorflow/tfjs-backend-wasm").then(() =>
  tf.getKernel("Conv2DBackpropInput", "wasm")
);
const info = await initBackend("wasm");
console.log(`backend ${info.name}, threads ${info.threads}, tfjs ${info.tfjsVersion}`);
const backend = tf.backend() as unknown as WasmBackend;
original.setupFunc?.(backend); // it was unregistered before the backend ran the setups

for (const s of SHAPES) {
  const rng = deriveRng(0, `bench/${s.name}`);
  const x = tf.tensor4d(rng.normal(s.x.reduce((a, d) => a * d, 1)), s.x);
  const w = tf.tensor4d(rng.normal(s.filter.reduce((a, d) => a * d, 1)), s.filter);
  const conv = tf.backend_util.computeConv2DInfo(s.x, s.filter, s.stride, 1, "same");
  const dy = tf.tensor4d(rng.normal(conv.outShape.reduce((a, d) => a * d, 1)), conv.outShape);
  const inputAttrs = { strides: s.stride, pad: "same", dataFormat: "NHWC", inputShape: s.x };
  const filterAttrs = { strides: s.stride, pad: "same", dataFormat: "NHWC", filterShape: s.filter };

  const forward = median(() => tf.conv2d(x, w, s.stride, "same").dispose());
  const inputOld = median(() => {
    const out = original.kernelFunc({
      inputs: { dy, filter: w },
      backend,
      attrs: inputAttrs as unknown as tf.NamedAttrMap,
    }) as tf.TensorInfo;
    backend.disposeData(out.dataId);
  });
  const inputNew = median(() =>
    (tf.engine().runKernel("Conv2DBackpropInput", { dy, filter: w }, inputAttrs) as tf.Tensor)
      .dispose()
  );
  const xv = x.dataSync() as Float32Array;
  const dyv = dy.dataSync() as Float32Array;
  const out = {
    oh: conv.outHeight,
    ow: conv.outWidth,
    top: conv.padInfo.top,
    left: conv.padInfo.left,
  };
  const filterOld = median(() => naiveFilterGrad(xv, dyv, s, out), 3);
  const filterNew = median(() =>
    (tf.engine().runKernel("Conv2DBackpropFilter", { x, dy }, filterAttrs) as tf.Tensor).dispose()
  );
  // im2col (extractImagePatches-like, via pad + strided slices + concat) and one matMul.
  const filterIm2col = median(() =>
    tf.tidy(() => {
      const [kh, kw, cin, cout] = s.filter;
      const { top, bottom, left, right } = conv.padInfo;
      const xp = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]]);
      const cols: tf.Tensor[] = [];
      for (let i = 0; i < kh; i++) {
        for (let j = 0; j < kw; j++) {
          cols.push(tf.stridedSlice(xp, [0, i, j, 0], [
            s.x[0],
            i + (conv.outHeight - 1) * s.stride + 1,
            j + (conv.outWidth - 1) * s.stride + 1,
            cin,
          ], [1, s.stride, s.stride, 1]));
        }
      }
      const patches = tf.concat(cols, 3).reshape([-1, kh * kw * cin]);
      return tf.matMul(patches, dy.reshape([-1, cout]), true, false).reshape(s.filter);
    }).dispose()
  );

  // Same results?
  const a = tf.engine().runKernel(
    "Conv2DBackpropInput",
    { dy, filter: w },
    inputAttrs,
  ) as tf.Tensor;
  const bInfo = original.kernelFunc({
    inputs: { dy, filter: w },
    backend,
    attrs: inputAttrs as unknown as tf.NamedAttrMap,
  }) as tf.TensorInfo;
  const b = tf.engine().makeTensorFromTensorInfo(bInfo);
  const dIn = tf.max(tf.abs(tf.sub(a, b))).dataSync()[0];
  const f = tf.engine().runKernel("Conv2DBackpropFilter", { x, dy }, filterAttrs) as tf.Tensor;
  const fRef = naiveFilterGrad(xv, dyv, s, out);
  const dF = tf.tidy(() => tf.max(tf.abs(tf.sub(f, tf.tensor(fRef, s.filter)))).dataSync()[0]);
  tf.dispose([a, b, f, x, w, dy]);

  const ms = (v: number): string => `${v.toFixed(1)} ms`;
  console.log(
    `${s.name}: forward ${ms(forward)} | dx old ${ms(inputOld)} new ${ms(inputNew)} ` +
      `(x${(inputOld / inputNew).toFixed(1)}, max diff ${dIn.toExponential(1)}) | dW naive JS ` +
      `${ms(filterOld)} new ${ms(filterNew)} (x${(filterOld / filterNew).toFixed(1)}, max diff ` +
      `${dF.toExponential(1)}), im2col+matMul ${ms(filterIm2col)}`,
  );
}
