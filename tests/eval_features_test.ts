/**
 * The feature network: loads from the installed npm package files, and its features of a fixed
 * image match the stored fixture; a user-supplied tfjs model replaces it.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { initBackend } from "../src/backend/mod.ts";
import { loadFeatureNetwork } from "../src/eval/features.ts";
import { deriveRng } from "../src/rng.ts";
import { tf } from "../src/tf.ts";
import { fixedImage } from "./fixtures/make_iv3m5_fixture.ts";

const FIXTURE = JSON.parse(
  await Deno.readTextFile(new URL("./fixtures/iv3m5_features.json", import.meta.url)),
) as Record<string, number[]> & { sha256: string };

function cosine(a: Float32Array, b: Float32Array): number {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  return ab / Math.sqrt(aa * bb);
}

Deno.test("feature network: nsfwjs InceptionV3 at mixed5 matches the stored fixture", async () => {
  await initBackend("wasm");
  for (const resize of [299, 128]) {
    const net = await loadFeatureNetwork({ resize });
    assert.equal(net.info.dims, 768);
    assert.equal(net.info.layer, "mixed5");
    assert.equal(net.info.metricSuffix, "_iv3m5");
    assert.equal(net.info.sha256, FIXTURE.sha256);
    const image = fixedImage();
    // batch of 3: the image, its mirror and noise, extracted in batches of 2
    const mirrored = new Uint8Array(image.length);
    for (let y = 0; y < 32; y++) {
      for (let x = 0; x < 32; x++) {
        for (let c = 0; c < 3; c++) {
          mirrored[(y * 32 + x) * 3 + c] = image[(y * 32 + 31 - x) * 3 + c];
        }
      }
    }
    const noise = Uint8Array.from(
      deriveRng(0, "noise").normal(image.length),
      (v) => Math.max(0, Math.min(255, Math.round(128 + 80 * v))),
    );
    const all = new Uint8Array(3 * image.length);
    all.set(image, 0);
    all.set(mirrored, image.length);
    all.set(noise, 2 * image.length);
    const f = await net.extract(all, { count: 3, size: 32, batchSize: 2 });
    const expected = FIXTURE[String(resize)];
    let worst = 0;
    for (let i = 0; i < 768; i++) worst = Math.max(worst, Math.abs(f[i] - expected[i]));
    assert.ok(worst < 1e-4, `resize ${resize}: max |difference| ${worst}`);
    const own = f.subarray(0, 768);
    assert.ok(
      cosine(own, f.subarray(768, 1536)) > cosine(own, f.subarray(1536)),
      "a mirrored image is closer than noise",
    );
    net.dispose();
  }
});

Deno.test("feature network: a user's tfjs model.json is loaded from disk and names the metrics plainly", async () => {
  await initBackend("wasm");
  const dir = await Deno.makeTempDir();
  try {
    const model = tf.sequential({
      layers: [
        tf.layers.conv2d({
          inputShape: [null, null, 3] as unknown as number[],
          filters: 5,
          kernelSize: 3,
          kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }),
        }),
      ],
    });
    await model.save(tf.io.withSaveHandler(async (artifacts) => {
      await Deno.writeFile(
        join(dir, "weights.bin"),
        new Uint8Array(artifacts.weightData as ArrayBuffer),
      );
      await Deno.writeTextFile(
        join(dir, "model.json"),
        JSON.stringify({
          format: "layers-model",
          modelTopology: artifacts.modelTopology,
          weightsManifest: [{ paths: ["weights.bin"], weights: artifacts.weightSpecs }],
        }),
      );
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: "JSON" } };
    }));
    const net = await loadFeatureNetwork({ resize: 80, modelPath: join(dir, "model.json") });
    assert.equal(net.info.dims, 5);
    assert.equal(net.info.metricSuffix, "");
    const f = await net.extract(fixedImage(), { count: 1, size: 32 });
    const direct = tf.tidy(() =>
      (model.predict(
        tf.image.resizeBilinear(
          tf.tensor4d(fixedImage(), [1, 32, 32, 3], "int32").toFloat(),
          [80, 80],
          false,
          true,
        )
          .div(127.5).sub(1),
      ) as tf.Tensor).mean([1, 2])
    );
    const want = await direct.data();
    direct.dispose();
    for (let i = 0; i < 5; i++) assert.ok(Math.abs(f[i] - want[i]) < 1e-5);
    net.dispose();
    model.dispose();
    await assert.rejects(
      loadFeatureNetwork({ modelPath: join(dir, "missing.json") }),
      /eval\.features: cannot read the feature model/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
