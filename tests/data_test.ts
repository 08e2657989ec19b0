import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import {
  AVATAR_BACKGROUNDS,
  avatarSvg,
  BACKGROUND_ATTRIBUTE,
  loadAvatars,
} from "../src/data/avatars.ts";
import {
  IMAGE_EXTENSIONS,
  listImages,
  loadFolder,
  RESIZE_OPTIONS,
  resizeImages,
} from "../src/data/folder.ts";
import { type Dataset, loadDataset, makeBatch } from "../src/data/mod.ts";
import { UserError } from "../src/errors.ts";
import { deriveRng } from "../src/rng.ts";

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

    // Labels: one row per face, values inside each vocabulary, equal to DiceBear's choice, and
    // the background label is the corner pixel's colour.
    const { attributes, data } = first.labels;
    const names = attributes.map((a) => a.name);
    for (const name of ["hair", "eyes", "mouth", "head", BACKGROUND_ATTRIBUTE]) {
      assert.ok(names.includes(name), name);
    }
    assert.equal(data.length, COUNT * attributes.length);
    const background = names.indexOf(BACKGROUND_ATTRIBUTE);
    assert.deepEqual(attributes[background].values, [...AVATAR_BACKGROUNDS]);
    const backgrounds = new Set<number>();
    for (let i = 0; i < COUNT; i++) {
      const row = Array.from(data.subarray(i * attributes.length, (i + 1) * attributes.length));
      row.forEach((v, a) => assert.ok(v < attributes[a].values.length));
      assert.deepEqual(row, avatarSvg(7, i, { size: SIZE }).labels);
      const p = i * imageBytes;
      const corner = hex(first.pixels[p], first.pixels[p + 1], first.pixels[p + 2]);
      assert.equal(corner, attributes[background].values[row[background]], `face ${i}`);
      backgrounds.add(row[background]);
    }
    assert.ok(backgrounds.size > 1);
    for (const a of ["glasses", "beard"]) {
      assert.equal(attributes[names.indexOf(a)].values[0], "none");
    }
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
  for (const [from, to] of [[32, 16], [30, 20], [16, 24], [9, 4]]) {
    const count = 5;
    const bytes = from * from * 3;
    const pixels = Uint8Array.from({ length: count * bytes }, () => rng.int(256));
    const resized = await resizeImages(pixels, { count, from, to });
    assert.equal(resized.length, count * to * to * 3);
    for (let i = 0; i < count; i++) {
      const alone = await sharp(pixels.subarray(i * bytes, (i + 1) * bytes), {
        raw: { width: from, height: from, channels: 3 },
      }).resize(to, to, RESIZE_OPTIONS).raw().toBuffer();
      assert.deepEqual(
        resized.subarray(i * to * to * 3, (i + 1) * to * to * 3),
        new Uint8Array(alone),
        `${from} -> ${to}, image ${i}`,
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

Deno.test("loadFolder: recursive, sorted, case-insensitive, decoded to RGB", async () => {
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
    const images = await loadFolder(dir, { size: 4, onProgress: (done) => (last = done) });
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
    assert.deepEqual(images.labels?.attributes, [{ name: "class", values: ["cats", "dogs"] }]);
    assert.deepEqual(Array.from(images.labels?.data ?? []), [0, 0, 1, 1, 1, 1]);

    const limited = await loadFolder(dir, { size: 4, limit: 2 });
    assert.deepEqual(limited.files, ["cats/a.png", "cats/deep/B.JPG"]);
    assert.deepEqual(limited.pixels, images.pixels.subarray(0, 2 * 48));

    const ds = await loadDataset({ kind: "folder", path: ".", limit: 3 }, {
      transform: { size: 4, horizontalFlip: false },
      seed: 0,
      baseDir: dir,
    });
    assert.equal(ds.count, 3);
    assert.match(ds.source, /^folder: 3 images from /);
  });
});

Deno.test("loadFolder: clear errors", async () => {
  await withTempDir(async (dir) => {
    const missing = join(dir, "nope");
    await assert.rejects(loadFolder(missing, { size: 4 }), (e: unknown) => {
      assert.ok(e instanceof UserError);
      assert.match(e.message, /nope does not exist/);
      assert.match(e.message, /dataset\.path/);
      return true;
    });

    const experimentFile = join(dir, "exp.json");
    await assert.rejects(
      loadDataset({ kind: "folder", path: "nope" }, {
        transform: { size: 4, horizontalFlip: false },
        seed: 0,
        experimentFile,
      }),
      (e: unknown) => {
        assert.ok(e instanceof UserError);
        assert.equal(e.details.file, experimentFile);
        assert.ok(e.message.startsWith(`${experimentFile}: dataset.path: image folder ${missing}`));
        return true;
      },
    );

    await writeFile(join(dir, "file.png"), "x");
    await assert.rejects(loadFolder(join(dir, "file.png"), { size: 4 }), /is not a directory/);

    const empty = join(dir, "empty");
    await mkdir(join(empty, "sub"), { recursive: true });
    await writeFile(join(empty, "sub", "readme.md"), "hi");
    await assert.rejects(loadFolder(empty, { size: 4 }), (e: unknown) => {
      assert.ok(e instanceof UserError);
      assert.match(e.message, /contains no images/);
      for (const ext of IMAGE_EXTENSIONS) assert.ok(e.message.includes(ext), ext);
      return true;
    });

    const corrupt = join(dir, "corrupt");
    await mkdir(corrupt);
    await sharp({ create: { width: 2, height: 2, channels: 3, background: "#000" } }).png()
      .toFile(join(corrupt, "a.png"));
    await writeFile(join(corrupt, "b.png"), "this is not a png");
    await assert.rejects(loadFolder(corrupt, { size: 4 }), (e: unknown) => {
      assert.ok(e instanceof UserError);
      assert.match(e.message, /cannot decode image .*corrupt\/b\.png/);
      return true;
    });
  });
});

function tinyDataset(): Dataset {
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
  return { count: 2, size: 2, channels: 3, pixels, source: "test" };
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
