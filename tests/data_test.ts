import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { createHash } from "node:crypto";
import {
  AVATAR_BACKGROUNDS,
  avatarPlan,
  avatarSvg,
  BACKGROUND_ATTRIBUTE,
  loadAvatars,
} from "../src/data/avatars.ts";
import { listImages } from "../src/data/folder.ts";
import { batchLabels, loadDataset, makeBatch } from "../src/data/mod.ts";
import { progressLine, progressReporter } from "../src/data/progress.ts";
import { resizeImages } from "../src/data/resize.ts";
import {
  type BatchImages,
  cropBox,
  flipProbability,
  normalisation,
  normalisationTable,
} from "../src/data/transform.ts";
import { UserError } from "../src/errors.ts";
import { deriveRng } from "../src/rng.ts";
import { epochPlan } from "../src/train/mod.ts";

const COUNT = 12;
const SIZE = 32;

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "ddpm-lab-data-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function hex(r: number, g: number, b: number): string {
  return "#" + [r, g, b].map((v) => v.toString(16).padStart(2, "0")).join("");
}

Deno.test("avatars: rendering is deterministic, cached, labelled and varied", async () => {
  await withTempDir(async (dir) => {
    const cacheA = join(dir, "a");
    const cacheB = join(dir, "b");
    const progress: number[] = [];
    const first = await loadAvatars(7, {
      count: COUNT,
      renderSize: SIZE,
      cacheDir: cacheA,
      onProgress: (done, total) => {
        assert.equal(total, COUNT);
        progress.push(done);
      },
    });
    assert.equal(first.fromCache, false);
    assert.equal(first.count, COUNT);
    assert.equal(first.size, SIZE);
    assert.equal(first.pixels.length, COUNT * SIZE * SIZE * 3);
    assert.deepEqual(progress, Array.from({ length: COUNT }, (_, i) => i + 1));
    // Atomic writes leave exactly the pixel file and the JSON, no temp files.
    const files = (await readdir(cacheA)).sort();
    assert.equal(files.length, 2);
    assert.ok(files[0].endsWith(".json") && files[1].endsWith(".rgb"), files.join(", "));

    const hit = await loadAvatars(7, { count: COUNT, renderSize: SIZE, cacheDir: cacheA });
    assert.equal(hit.fromCache, true);
    assert.deepEqual(hit.pixels, first.pixels);
    assert.deepEqual(hit.labels, first.labels);

    const fresh = await loadAvatars(7, { count: COUNT, renderSize: SIZE, cacheDir: cacheB });
    assert.equal(fresh.fromCache, false);
    assert.deepEqual(fresh.pixels, first.pixels);
    assert.deepEqual(fresh.labels, first.labels);

    const other = await loadAvatars(8, { count: COUNT, renderSize: SIZE, cacheDir: cacheA });
    assert.equal(other.fromCache, false);
    assert.notDeepEqual(other.pixels, first.pixels);

    // No repeated face.
    const imageBytes = SIZE * SIZE * 3;
    const seen = new Set<string>();
    for (let i = 0; i < COUNT; i++) {
      seen.add(first.pixels.subarray(i * imageBytes, (i + 1) * imageBytes).join(","));
    }
    assert.equal(seen.size, COUNT);

    // Labels: one Int32 column per attribute, values inside each vocabulary, equal to DiceBear's
    // choice, and the background label is the corner pixel's colour.
    const { attributes, labels } = first.labels;
    const names = attributes.map((a) => a.name);
    for (const name of ["hair", "eyes", "mouth", "head", BACKGROUND_ATTRIBUTE]) {
      assert.ok(names.includes(name), name);
    }
    assert.equal(labels.length, attributes.length);
    for (const column of labels) assert.equal(column.length, COUNT);
    const background = names.indexOf(BACKGROUND_ATTRIBUTE);
    assert.deepEqual(attributes[background].values, [...AVATAR_BACKGROUNDS]);
    assert.equal(attributes[background].count, AVATAR_BACKGROUNDS.length);
    const backgrounds = new Set<number>();
    for (let i = 0; i < COUNT; i++) {
      const row = labels.map((column) => column[i]);
      row.forEach((v, a) => assert.ok(v >= 0 && v < attributes[a].count));
      assert.deepEqual(row, avatarSvg(7, i, { size: SIZE }).labels);
      const p = i * imageBytes;
      const corner = hex(first.pixels[p], first.pixels[p + 1], first.pixels[p + 2]);
      assert.equal(corner, attributes[background].values![row[background]], `face ${i}`);
      backgrounds.add(row[background]);
    }
    assert.ok(backgrounds.size > 1);
    for (const a of ["glasses", "beard"]) {
      assert.equal(attributes[names.indexOf(a)].values![0], "none");
    }
  });
});

Deno.test("avatars: the default faces keep the bytes and labels of earlier versions", async () => {
  await withTempDir(async (dir) => {
    const set = await loadAvatars(7, { count: COUNT, renderSize: SIZE, cacheDir: dir });
    // sha256 of the pixels and of the row-major uint8 labels, as rendered before the configurable
    // attributes existed (commit bb623cc).
    assert.equal(
      createHash("sha256").update(set.pixels).digest("hex"),
      "40c43b2450c1d8b52e55411101c8d53dcffeb4352c3c639099adaed3a41b2384",
    );
    const rows = new Uint8Array(COUNT * set.labels.attributes.length);
    set.labels.labels.forEach((column, a) => {
      column.forEach((v, i) => rows[i * set.labels.attributes.length + a] = v);
    });
    assert.equal(
      createHash("sha256").update(rows).digest("hex"),
      "9ccb24b2fd4d58973b33453cfcae1084742b5d15aeb8565971b1b8008ca1decf",
    );
  });
});

Deno.test("avatars: configured attributes vary as asked, balanced exactly, labelled", async () => {
  await withTempDir(async (dir) => {
    const count = 12;
    const attributes = {
      hair: { values: ["variant01", "variant02", "variant03"], balanced: true },
      glasses: { probability: 50, balanced: true },
      mouth: { groups: { happy: ["happy*"], sad: ["sad*"] }, balanced: true },
      hairColor: { values: ["#e5b887", "#3B2219"], balanced: true },
      backgroundColor: { values: ["#ffd5dc", "#b6e3f4"], balanced: true },
      skinColor: { values: ["#f2d3b1"] },
    };
    const set = await loadAvatars(3, { count, renderSize: SIZE, cacheDir: dir, attributes });
    const { attributes: attrs, labels } = set.labels;
    const column = (name: string) => Array.from(labels[attrs.findIndex((a) => a.name === name)]);
    const attr = (name: string) => attrs.find((a) => a.name === name)!;
    const tally = (name: string) => {
      const counts = new Array(attr(name).count).fill(0);
      for (const v of column(name)) counts[v]++;
      return counts;
    };
    assert.deepEqual(attr("hair").values, ["variant01", "variant02", "variant03"]);
    assert.deepEqual(tally("hair"), [4, 4, 4]);
    assert.deepEqual(attr("glasses").values, [
      "none",
      "variant01",
      "variant02",
      "variant03",
      "variant04",
      "variant05",
    ]);
    assert.deepEqual(tally("glasses"), [2, 2, 2, 2, 2, 2]);
    assert.deepEqual(attr("mouth").values, ["happy", "sad"]);
    assert.deepEqual(tally("mouth"), [6, 6]);
    assert.deepEqual(attr("hairColor").values, ["#e5b887", "#3b2219"]);
    assert.deepEqual(tally("hairColor"), [6, 6]);
    assert.deepEqual(attr("backgroundColor").values, ["#ffd5dc", "#b6e3f4"]);
    assert.deepEqual(tally("backgroundColor"), [6, 6]);
    assert.deepEqual(tally("skinColor"), [12]);
    const plan = avatarPlan(attributes, { seed: 3, count });
    for (let i = 0; i < count; i++) {
      const { svg, labels: row } = avatarSvg(3, i, { size: SIZE, plan });
      assert.deepEqual(row, labels.map((c) => c[i]), `face ${i}`);
      // What the labels say is what is drawn: the mouth group, hair colour and background.
      const mouth = attr("mouth").values![column("mouth")[i]];
      assert.ok(svg.length > 0 && (mouth === "happy" || mouth === "sad"));
      assert.ok(svg.toLowerCase().includes(attr("hairColor").values![column("hairColor")[i]]));
      const p = i * SIZE * SIZE * 3;
      const corner = hex(set.pixels[p], set.pixels[p + 1], set.pixels[p + 2]);
      assert.equal(corner, attr("backgroundColor").values![column("backgroundColor")[i]]);
    }
    // Another configuration is another cache entry with other faces.
    const plain = await loadAvatars(3, { count, renderSize: SIZE, cacheDir: dir });
    assert.notDeepEqual(plain.pixels, set.pixels);

    const bad = (attrs: Record<string, unknown>, pattern: RegExp) =>
      assert.throws(
        () => avatarPlan(attrs as Parameters<typeof avatarPlan>[0], { seed: 0, count: 4 }),
        (e: unknown) => e instanceof UserError && pattern.test(e.message),
      );
    bad({ wings: {} }, /dataset\.attributes\.wings: unknown avatar attribute 'wings'/);
    bad({ hair: { values: ["variant99"] } }, /hair\.values\[0\]: unknown hair variant/);
    bad({ mouth: { groups: { happy: ["happy*"] } } }, /mouth variant 'sad01' is in no group/);
    bad({ hairColor: { values: ["red"] } }, /'red' is not a colour/);
    bad({ hairColor: { probability: 5 } }, /hairColor is a colour/);
  });
});

Deno.test("avatars: a damaged cache is rendered again with identical bytes", async () => {
  await withTempDir(async (dir) => {
    const first = await loadAvatars(3, { count: 4, renderSize: 16, cacheDir: dir });
    await writeFile(first.cacheFile, new Uint8Array(10));
    const again = await loadAvatars(3, { count: 4, renderSize: 16, cacheDir: dir });
    assert.equal(again.fromCache, false);
    assert.deepEqual(again.pixels, first.pixels);
  });
});

Deno.test("loadDataset: avatars are resized to the transform size", async () => {
  await withTempDir(async (dir) => {
    const ds = await loadDataset({ kind: "avatars", count: 4, renderSize: 32 }, {
      transform: { size: 16, horizontalFlip: true },
      seed: 1,
      cacheDir: dir,
    });
    assert.equal(ds.count, 4);
    assert.equal(ds.size, 16);
    assert.equal(ds.channels, 3);
    assert.equal(ds.pixels.length, 4 * 16 * 16 * 3);
    assert.ok(ds.labels);
    assert.match(ds.source, /^avatars: 4 .*lorelei.*16 px/);
    assert.ok(!ds.source.includes("\n"));
  });
});

Deno.test("resizeImages: strips give the same bytes as resizing each image alone", async () => {
  const rng = deriveRng(0, "test/resize");
  const cases = [[32, 16, "linear"], [30, 20, "linear"], [16, 24, "linear"], [9, 4, "linear"], [
    32,
    12,
    "lanczos3",
  ], [12, 20, "cubic"]] as const;
  for (const [from, to, kernel] of cases) {
    const count = 5;
    const bytes = from * from * 3;
    const pixels = Uint8Array.from({ length: count * bytes }, () => rng.int(256));
    const resized = await resizeImages(pixels, { count, from, to, kernel });
    assert.equal(resized.length, count * to * to * 3);
    for (let i = 0; i < count; i++) {
      const alone = await sharp(pixels.subarray(i * bytes, (i + 1) * bytes), {
        raw: { width: from, height: from, channels: 3 },
      }).resize(to, to, { fit: "fill", kernel, fastShrinkOnLoad: false }).raw().toBuffer();
      assert.deepEqual(
        resized.subarray(i * to * to * 3, (i + 1) * to * to * 3),
        new Uint8Array(alone),
        `${from} -> ${to} (${kernel}), image ${i}`,
      );
    }
  }
  const same = new Uint8Array(2 * 4 * 4 * 3);
  assert.equal(await resizeImages(same, { count: 2, from: 4, to: 4 }), same);
  await assert.rejects(resizeImages(same, { count: 3, from: 4, to: 2 }), RangeError);
});

async function makeFolder(dir: string): Promise<void> {
  const solid = (r: number, g: number, b: number) =>
    sharp({ create: { width: 6, height: 4, channels: 3, background: { r, g, b } } });
  await mkdir(join(dir, "cats", "deep"), { recursive: true });
  await mkdir(join(dir, "dogs"), { recursive: true });
  await solid(255, 0, 0).png().toFile(join(dir, "cats", "a.png"));
  await solid(0, 255, 0).jpeg({ quality: 100 }).toFile(join(dir, "cats", "deep", "B.JPG"));
  await solid(0, 0, 255).webp({ lossless: true }).toFile(join(dir, "dogs", "c.webp"));
  await solid(255, 255, 0).gif().toFile(join(dir, "dogs", "d.gif"));
  // Fully transparent RGBA -> white.
  await sharp({
    create: { width: 5, height: 5, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } },
  })
    .png().toFile(join(dir, "dogs", "e.PNG"));
  // 16-bit greyscale.
  await sharp({
    create: { width: 3, height: 3, channels: 3, background: { r: 128, g: 128, b: 128 } },
  })
    .toColourspace("grey16").png().toFile(join(dir, "dogs", "f.png"));
  await writeFile(join(dir, "dogs", "notes.txt"), "not an image");
  await writeFile(join(dir, "cats", "png"), "extension-only name is not an image");
}

Deno.test("folder: recursive, sorted, case-insensitive, decoded to RGB, classes", async () => {
  await withTempDir(async (dir) => {
    await makeFolder(dir);
    assert.deepEqual(await listImages(dir), [
      "cats/a.png",
      "cats/deep/B.JPG",
      "dogs/c.webp",
      "dogs/d.gif",
      "dogs/e.PNG",
      "dogs/f.png",
    ]);
    let last = 0;
    const options = {
      transform: { size: 4, horizontalFlip: false },
      seed: 0,
      baseDir: dir,
      decodedCacheDir: join(dir, ".decoded"),
    };
    const images = await loadDataset({ kind: "folder", path: "." }, {
      ...options,
      onProgress: (done) => (last = done),
    });
    assert.equal(last, 6);
    assert.equal(images.count, 6);
    assert.equal(images.pixels.length, 6 * 4 * 4 * 3);
    const pixel = (i: number) => Array.from(images.pixels.subarray(i * 48, i * 48 + 3));
    const near = (actual: number[], expected: number[]) =>
      actual.forEach((v, k) =>
        assert.ok(Math.abs(v - expected[k]) <= 2, `${actual} vs ${expected}`)
      );
    near(pixel(0), [255, 0, 0]);
    near(pixel(1), [0, 255, 0]);
    near(pixel(2), [0, 0, 255]);
    near(pixel(3), [255, 255, 0]);
    near(pixel(4), [255, 255, 255]);
    near(pixel(5), [128, 128, 128]);
    assert.deepEqual(images.labels?.attributes, [
      { name: "class", count: 2, values: ["cats", "dogs"] },
    ]);
    assert.deepEqual(Array.from(images.labels?.labels[0] ?? []), [0, 0, 1, 1, 1, 1]);
    assert.deepEqual(
      batchLabels(images.labels!, [5, 0, 2]).map((c) => Array.from(c)),
      [[1, 0, 1]],
    );

    const limited = await loadDataset({ kind: "folder", path: ".", limit: 2 }, options);
    assert.equal(limited.count, 2);
    assert.deepEqual(limited.pixels, images.pixels.subarray(0, 2 * 48));
    assert.match(limited.source, /^folder: 2 images from /);

    await writeFile(join(dir, "file.png"), "x");
    await assert.rejects(
      loadDataset({ kind: "folder", path: "file.png" }, options),
      (e: unknown) => e instanceof UserError && /is not a directory/.test(e.message),
    );
  });
});

function tinyDataset(): BatchImages {
  // Two 2x2 images; image 0 row 0 = [0,0,0] [255,255,255], row 1 = [128,64,32] [1,2,3].
  const pixels = new Uint8Array([
    0,
    0,
    0,
    255,
    255,
    255,
    128,
    64,
    32,
    1,
    2,
    3,
    10,
    20,
    30,
    40,
    50,
    60,
    70,
    80,
    90,
    100,
    110,
    120,
  ]);
  return { count: 2, size: 2, pixels };
}

Deno.test("makeBatch: ToTensor + Normalize(0.5, 0.5) values and flips", () => {
  const ds = tinyDataset();
  const f = Math.fround;
  const norm = (v: number) => f(f(f(v / 255) - 0.5) / 0.5);
  const batch = makeBatch(ds, [1, 0]);
  assert.equal(batch.length, 2 * 12);
  assert.deepEqual(Array.from(batch.subarray(12)), Array.from(ds.pixels.subarray(0, 12), norm));
  assert.deepEqual(Array.from(batch.subarray(0, 12)), Array.from(ds.pixels.subarray(12), norm));
  assert.equal(batch[12], -1);
  assert.equal(batch[15], 1);
  for (let v = 0; v < 256; v++) assert.ok(Math.abs(norm(v) - (v / 255 - 0.5) / 0.5) < 1e-6);

  const flipped = makeBatch(ds, [0, 0], { flips: [true, false] });
  const order = [3, 4, 5, 0, 1, 2, 9, 10, 11, 6, 7, 8];
  assert.deepEqual(
    Array.from(flipped.subarray(0, 12)),
    order.map((k) => norm(ds.pixels[k])),
  );
  assert.deepEqual(Array.from(flipped.subarray(12)), Array.from(batch.subarray(12)));

  const out = new Float32Array(12);
  assert.equal(makeBatch(ds, [1], { out }), out);
  assert.throws(() => makeBatch(ds, [2]), RangeError);
  assert.throws(() => makeBatch(ds, [0], { out: new Float32Array(3) }), RangeError);
});

Deno.test("makeBatch: Normalize(mean, std) per channel, then scale", () => {
  const ds = tinyDataset();
  const f = Math.fround;
  const mean = [0.485, 0.456, 0.406];
  const std = [0.229, 0.224, 0.225];
  const scale = 0.5;
  const n = normalisation({ normalize: { mean, std }, scale });
  assert.deepEqual(n, { mean, std, scale });
  const table = normalisationTable(n);
  const batch = makeBatch({ ...ds, table }, [0]);
  batch.forEach((value, k) => {
    const c = k % 3;
    const expected = f(f(f(f(ds.pixels[k] / 255) - f(mean[c])) / f(std[c])) * f(scale));
    assert.equal(value, expected, `element ${k}`);
  });
  // One number applies to every channel; the default is mean = std = 0.5, scale 1.
  assert.deepEqual(normalisation({ normalize: { mean: 0.5, std: 0.25 } }).std, [0.25, 0.25, 0.25]);
  assert.deepEqual(normalisation({}), { mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], scale: 1 });
  assert.deepEqual(
    makeBatch({ ...ds, table: normalisationTable(normalisation({})) }, [0, 1]),
    makeBatch(ds, [0, 1]),
  );
});

Deno.test("flips: probability per image per epoch; true is the 0.5 of earlier versions", () => {
  const train = { shuffle: true } as Parameters<typeof epochPlan>[1]["train"];
  const plan = (flip: boolean | number) => epochPlan(4000, { seed: 3, epoch: 2, train, flip });
  const share = (flips: Uint8Array) => flips.reduce((a, b) => a + b, 0) / flips.length;
  assert.equal(flipProbability({ horizontalFlip: true }), 0.5);
  assert.equal(flipProbability({ horizontalFlip: false }), 0);
  assert.equal(flipProbability({ horizontalFlip: 0.2 }), 0.2);
  assert.deepEqual(plan(true).flips, plan(0.5).flips);
  assert.equal(share(plan(false).flips), 0);
  assert.equal(share(plan(1).flips), 1);
  const quarter = share(plan(0.25).flips);
  assert.ok(Math.abs(quarter - 0.25) < 0.03, String(quarter));
  // A smaller probability flips a subset of the images a larger one flips (same uniform draws).
  const a = plan(0.25).flips;
  const b = plan(0.5).flips;
  a.forEach((v, i) => assert.ok(v <= b[i]));
});

Deno.test("cropBox: torchvision CenterCrop offsets (round half to even)", () => {
  const box = (width: number, height: number, crop: number) => cropBox({ width, height }, crop);
  assert.deepEqual(box(500, 500, 360), { left: 70, top: 70, width: 360, height: 360 });
  assert.deepEqual(box(11, 11, 6), { left: 2, top: 2, width: 6, height: 6 }); // 2.5 -> 2
  assert.deepEqual(box(13, 12, 6), { left: 4, top: 3, width: 6, height: 6 }); // 3.5 -> 4
  assert.equal(box(5, 8, 6), undefined);
});

Deno.test("progress: a line every few seconds with count, images/s and ETA, and at the end", () => {
  const lines: string[] = [];
  let now = 100;
  const report = progressReporter("decoding", { log: (l) => lines.push(l), now: () => now });
  for (let done = 1; done <= 1000; done++) {
    now = 100 + done * 0.01; // 100 images/s
    report(done, 1000);
  }
  assert.deepEqual(lines, [
    "decoding 500/1000 images, 100 images/s, ETA 5 s",
    "decoding 1000/1000 images, 100 images/s, 10.0 s",
  ]);
  const hit: string[] = [];
  progressReporter("loading", { log: (l) => hit.push(l) })(24, 24);
  assert.deepEqual(hit, []);
  assert.equal(
    progressLine("x", { done: 0, total: 10, seconds: 0 }),
    "x 0/10 images, 0 images/s, ETA ?",
  );
});
