/**
 * The file sources of the data module (folder, zip, cartoonset): fixtures built here, labels,
 * the decoded cache, the deterministic transforms against expected pixels, and every bad input.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import sharp from "sharp";
// @ts-types="@types/yazl"
import yazl from "yazl";
import type { DatasetConfig, TransformConfig } from "../schemas/experiment.ts";
import { parseCartoonCsv } from "../src/data/cartoonset.ts";
import { listImages } from "../src/data/folder.ts";
import {
  countImages,
  type Dataset,
  loadDataset,
  type LoadDatasetOptions,
  loadLabelledImages,
} from "../src/data/mod.ts";
import { UserError } from "../src/errors.ts";
import { deriveRng } from "../src/rng.ts";
import { experimentFile, runFile, TINY } from "./helpers.ts";

type Rgb = [number, number, number];

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ddpm-lab-sources-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A PNG of `width x height` with `pixel(x, y)` as RGB or RGBA. */
async function png(
  width: number,
  height: number,
  pixel: (x: number, y: number) => number[],
): Promise<Uint8Array> {
  const channels = pixel(0, 0).length as 3 | 4;
  const raw = new Uint8Array(width * height * channels);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) raw.set(pixel(x, y), (y * width + x) * channels);
  }
  return new Uint8Array(
    await sharp(raw, { raw: { width, height, channels } }).png().toBuffer(),
  );
}

const solid = (rgb: Rgb, size = 6) => png(size, size, () => rgb);

async function zipBytes(files: Record<string, Uint8Array | string>): Promise<Uint8Array> {
  const zip = new yazl.ZipFile();
  for (const [name, body] of Object.entries(files)) {
    if (name.endsWith("/")) zip.addEmptyDirectory(name);
    else zip.addBuffer(Buffer.from(body), name);
  }
  zip.end();
  const chunks: Uint8Array[] = [];
  for await (const chunk of zip.outputStream) chunks.push(chunk as Uint8Array);
  return new Uint8Array(Buffer.concat(chunks));
}

async function writeFiles(dir: string, files: Record<string, Uint8Array | string>): Promise<void> {
  for (const [name, body] of Object.entries(files)) {
    const path = join(dir, name);
    await mkdir(join(path, ".."), { recursive: true });
    await writeFile(path, body);
  }
}

function options(dir: string, transform: Partial<TransformConfig> = {}): LoadDatasetOptions {
  return {
    transform: { size: 4, horizontalFlip: false, ...transform },
    seed: 0,
    baseDir: dir,
    decodedCacheDir: join(dir, ".decoded"),
  };
}

/** The RGB of pixel (x, y) of image i. */
function pixelOf(ds: Dataset, i: number, x = 0, y = 0): number[] {
  const at = ((i * ds.size + y) * ds.size + x) * 3;
  return Array.from(ds.pixels.subarray(at, at + 3));
}

function labelsOf(ds: Dataset): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  ds.labels?.attributes.forEach((a, k) => out[a.name] = Array.from(ds.labels!.labels[k]));
  return out;
}

const RED: Rgb = [255, 0, 0];
const GREEN: Rgb = [0, 255, 0];
const BLUE: Rgb = [0, 0, 255];

Deno.test("zip: ImageFolder classes under root, read in place, same pixels as a folder", async () => {
  await withTempDir(async (dir) => {
    const files = {
      "manga/train/cats/1.png": await solid(RED),
      "manga/train/cats/2.PNG": await solid(GREEN),
      "manga/train/dogs/3.png": await solid(BLUE),
      "manga/train/dogs/notes.txt": "not an image",
      "manga/readme.md": "hello",
    };
    const zip = await zipBytes({
      "manga/": "",
      ...files,
      "__MACOSX/manga/train/cats/._1.png": "resource fork",
    });
    await writeFile(join(dir, "manga.zip"), zip);
    const before = (await readdir(dir)).sort();

    const dataset: DatasetConfig = { kind: "zip", path: "manga.zip", root: "manga/train" };
    const ds = await loadDataset(dataset, options(dir));
    assert.equal(ds.count, 3);
    assert.deepEqual(pixelOf(ds, 0), RED);
    assert.deepEqual(pixelOf(ds, 1, 3, 3), GREEN);
    assert.deepEqual(pixelOf(ds, 2), BLUE);
    assert.deepEqual(ds.labels?.attributes, [
      { name: "class", count: 2, values: ["cats", "dogs"] },
    ]);
    assert.deepEqual(labelsOf(ds), { class: [0, 0, 1] });
    // The content hash of a zip is the archive's sha256 (what `sha256sum manga.zip` prints).
    assert.equal(ds.record.contentHash, createHash("sha256").update(zip).digest("hex"));
    assert.equal(ds.record.location, join(dir, "manga.zip"));
    assert.deepEqual(ds.record.labels, [
      { name: "class", count: 2, values: ["cats", "dogs"], counts: { cats: 2, dogs: 1 } },
    ]);
    assert.deepEqual(ds.record.skipped, []);
    assert.match(ds.source, /^zip: 3 images from .*manga\.zip \(root manga\/train\)/);
    // Nothing was extracted next to the archive (only the decoded cache was written).
    assert.deepEqual((await readdir(dir)).filter((f) => !before.includes(f)), [".decoded"]);

    // The same files in a folder decode to the same bytes.
    await writeFiles(join(dir, "folder"), files);
    const folder = await loadDataset({ kind: "folder", path: "folder/manga/train" }, options(dir));
    assert.deepEqual(folder.pixels, ds.pixels);
    assert.deepEqual(folder.labels, ds.labels);

    // Root with slashes around it, limit, and the whole archive (one class: "manga").
    const limited = await loadDataset(
      { kind: "zip", path: "manga.zip", root: "/manga/train/", limit: 2 },
      options(dir),
    );
    assert.deepEqual(limited.pixels, ds.pixels.subarray(0, 2 * 4 * 4 * 3));
    const whole = await loadDataset({ kind: "zip", path: "manga.zip" }, options(dir));
    assert.equal(whole.count, 3);
    assert.deepEqual(labelsOf(whole), { class: [0, 0, 0] });
    assert.equal(await countImages(dataset, { baseDir: dir }), 3);
  });
});

Deno.test("cartoonset: CSV attributes as labels, transparency on the configured colour", async () => {
  await withTempDir(async (dir) => {
    // A transparent image with an opaque red centre 2x2 (of 6x6).
    const transparentWithRedCentre = await png(
      6,
      6,
      (x, y) => (x >= 2 && x < 4 && y >= 2 && y < 4) ? [255, 0, 0, 255] : [0, 0, 0, 0],
    );
    const csv = (hair: number, glasses: number) =>
      `"hair", ${hair}, 111\n"glasses", ${glasses}, 12\n`;
    await writeFiles(dir, {
      "set/0/cs10.png": transparentWithRedCentre,
      "set/0/cs10.csv": csv(25, 11),
      "set/1/cs2.png": await solid(BLUE),
      "set/1/cs2.csv": '"glasses",0,12\r\n"hair",110,111\r\n', // other order, no spaces, CRLF
    });
    const ds = await loadDataset(
      { kind: "cartoonset", path: "set", background: "#00ff00" },
      options(dir, { size: 6 }),
    );
    assert.equal(ds.count, 2);
    assert.deepEqual(ds.labels?.attributes, [
      { name: "hair", count: 111 },
      { name: "glasses", count: 12 },
    ]);
    assert.deepEqual(labelsOf(ds), { hair: [25, 110], glasses: [11, 0] });
    assert.deepEqual(pixelOf(ds, 0, 0, 0), GREEN); // transparent -> the background colour
    assert.deepEqual(pixelOf(ds, 0, 2, 2), RED);
    assert.deepEqual(pixelOf(ds, 1, 5, 5), BLUE);
    assert.equal(ds.record.labels[0].counts["25"], 1);
    assert.equal(ds.record.labels[0].counts["0"], 0);
    // Default background: white.
    const white = await loadDataset({ kind: "cartoonset", path: "set" }, options(dir, { size: 6 }));
    assert.deepEqual(pixelOf(white, 0, 0, 0), [255, 255, 255]);

    assert.deepEqual(parseCartoonCsv(' "eye_angle", 2, 3\n\n"face_shape",0,7 \n'), [
      { name: "eye_angle", index: 2, total: 3 },
      { name: "face_shape", index: 0, total: 7 },
    ]);

    // The judge's view: images, labels per attribute, descriptors and the content hash.
    const judged = await loadLabelledImages({ kind: "cartoonset", path: "set" }, {
      ...options(dir),
      transform: { size: 6 },
    });
    assert.equal(judged.count, 2);
    assert.equal(judged.height, 6);
    assert.deepEqual(judged.images, white.pixels);
    assert.deepEqual(judged.attributes.map((a) => a.name), ["hair", "glasses"]);
    assert.deepEqual(Array.from(judged.labels[0]), [25, 110]);
    assert.equal(judged.contentHash, white.record.contentHash);
  });
});

Deno.test("transforms: center crop (torchvision offsets), resize kernels, exact pixels", async () => {
  await withTempDir(async (dir) => {
    // 11x11: the crop of 5 starts at round_half_even(3) = 3; a red 5x5 square there, blue around.
    const framed = await png(11, 11, (x, y) => (x >= 3 && x < 8 && y >= 3 && y < 8) ? RED : BLUE);
    // 12x12 and crop 5: (12 - 5) / 2 = 3.5 rounds to 4 (half to even).
    const framed12 = await png(12, 12, (x, y) => (x >= 4 && x < 9 && y >= 4 && y < 9) ? RED : BLUE);
    // Vertical stripes of width 1: black, white, black, ...
    const stripes = await png(8, 8, (x) => x % 2 === 0 ? [0, 0, 0] : [255, 255, 255]);
    await writeFiles(dir, {
      "crop/a.png": framed,
      "crop/b.png": framed12,
      "stripes/s.png": stripes,
    });
    const cropped = await loadDataset(
      { kind: "folder", path: "crop" },
      options(dir, { centerCrop: 5, size: 5 }),
    );
    for (let i = 0; i < 2; i++) {
      for (let k = 0; k < 25; k++) {
        assert.deepEqual(pixelOf(cropped, i, k % 5, Math.floor(k / 5)), RED, `image ${i}`);
      }
    }
    assert.deepEqual(cropped.record.transform, { centerCrop: 5, size: 5, kernel: "linear" });

    // Shrinking 8 -> 4: the antialiased linear kernel (a triangle of half-width 2 source pixels,
    // edges extended) gives output x the white share of weights [1/4, 3/4, 3/4, 1/4] over source
    // pixels 2x-1 .. 2x+2: 3/8, 1/2, 1/2, 5/8 of 255; nearest keeps one stripe.
    const linear = await loadDataset({ kind: "folder", path: "stripes" }, options(dir));
    const nearest = await loadDataset(
      { kind: "folder", path: "stripes" },
      options(dir, { kernel: "nearest" }),
    );
    [3 / 8, 1 / 2, 1 / 2, 5 / 8].forEach((share, x) => {
      const [v] = pixelOf(linear, 0, x, 1);
      assert.ok(Math.abs(v - share * 255) <= 1, `linear x=${x}: ${v}`);
      assert.ok([0, 255].includes(pixelOf(nearest, 0, x, 1)[0]));
    });
    assert.notDeepEqual(linear.pixels, nearest.pixels);
  });
});

Deno.test("decoded cache: a second load decodes nothing; new content or transform misses", async () => {
  await withTempDir(async (dir) => {
    await writeFiles(dir, {
      "imgs/a/1.png": await solid(RED),
      "imgs/b/2.png": await solid(GREEN),
    });
    const dataset: DatasetConfig = { kind: "folder", path: "imgs" };
    let decoded = 0;
    const opts = { ...options(dir), onProgress: () => decoded++ };
    const first = await loadDataset(dataset, opts);
    assert.equal(decoded, 2);
    assert.equal(first.record.fromCache, false);

    decoded = 0;
    const second = await loadDataset(dataset, opts);
    assert.equal(decoded, 0);
    assert.equal(second.record.fromCache, true);
    assert.deepEqual(second.pixels, first.pixels);
    assert.deepEqual(second.labels, first.labels);
    assert.deepEqual({ ...second.record, fromCache: false }, first.record);
    assert.match(second.source, /decoded cache/);

    // Another size is another entry.
    const bigger = await loadDataset(dataset, {
      ...opts,
      transform: { size: 6, horizontalFlip: true },
    });
    assert.equal(bigger.record.fromCache, false);
    assert.equal(decoded, 2);

    // Changed bytes change the content hash, so the cache misses.
    await writeFile(join(dir, "imgs/b/2.png"), await solid(BLUE));
    decoded = 0;
    const changed = await loadDataset(dataset, opts);
    assert.equal(decoded, 2);
    assert.notEqual(changed.record.contentHash, first.record.contentHash);
    assert.deepEqual(pixelOf(changed, 1), BLUE);

    // A damaged cache entry is ignored and rewritten.
    const cached = (await readdir(join(dir, ".decoded"))).filter((f) => f.endsWith(".u8"));
    for (const f of cached) await writeFile(join(dir, ".decoded", f), new Uint8Array(3));
    decoded = 0;
    const again = await loadDataset(dataset, opts);
    assert.equal(decoded, 2);
    assert.deepEqual(again.pixels, changed.pixels);
  });
});

/** Writes one good image and the bad files of every kind; returns the bad names and reasons. */
async function badFolder(dir: string): Promise<Record<string, RegExp>> {
  const noise = deriveRng(0, "test/noise");
  const big = await png(32, 32, () => [noise.int(256), noise.int(256), noise.int(256)]);
  await writeFiles(dir, {
    "good.png": await solid(RED, 8),
    "corrupt.png": Uint8Array.from({ length: 300 }, (_, i) => (i * 37) % 256),
    "truncated.png": big.subarray(0, Math.floor(big.length * 0.6)),
    "empty.png": new Uint8Array(0),
    "text.jpg": "this is a text file with an image extension",
    "small.png": await solid(BLUE, 4),
  });
  return {
    "corrupt.png": /not a readable image/,
    "truncated.png": /not a readable image/,
    "empty.png": /empty file \(0 bytes\)/,
    "text.jpg": /not a readable image/,
    "small.png": /4x4 is smaller than centerCrop 6/,
  };
}

Deno.test("bad images: fail lists every bad file; skip trains on the rest and records them", async () => {
  await withTempDir(async (dir) => {
    const bad = await badFolder(join(dir, "bad"));
    const dataset: DatasetConfig = { kind: "folder", path: "bad" };
    const crop = { centerCrop: 6, size: 4 };
    await assert.rejects(loadDataset(dataset, options(dir, crop)), (e: unknown) => {
      assert.ok(e instanceof UserError);
      assert.match(e.message, /^dataset: 5 bad files \(onBadImage "fail"/);
      for (const [name, reason] of Object.entries(bad)) {
        const line: string | undefined = e.message.split("\n").find((l) =>
          l.includes(`/bad/${name}:`)
        );
        assert.ok(line, `${name} is listed`);
        assert.match(line, reason, line);
      }
      assert.ok(!e.message.includes("good.png"));
      return true;
    });
    const skipped = await loadDataset({ ...dataset, onBadImage: "skip" }, options(dir, crop));
    assert.equal(skipped.count, 1);
    assert.deepEqual(pixelOf(skipped, 0), RED);
    assert.deepEqual(
      skipped.record.skipped.map((s) => s.file.slice(s.file.lastIndexOf("/") + 1)).sort(),
      Object.keys(bad).sort(),
    );
    for (const s of skipped.record.skipped) {
      assert.match(s.reason, bad[s.file.slice(s.file.lastIndexOf("/") + 1)]);
    }

    // The same bad files inside a zip are named archive:entry.
    const entries: Record<string, Uint8Array> = {};
    for (const name of await listImages(join(dir, "bad"))) {
      entries[`in/${name}`] = await Deno.readFile(join(dir, "bad", name));
    }
    await writeFile(join(dir, "bad.zip"), await zipBytes(entries));
    await assert.rejects(
      loadDataset({ kind: "zip", path: "bad.zip" }, options(dir, crop)),
      (e: unknown) => {
        assert.ok(e instanceof UserError);
        assert.match(e.message, /bad\.zip:in\/truncated\.png: not a readable image/);
        assert.match(e.message, /bad\.zip:in\/empty\.png: empty file/);
        return true;
      },
    );
  });
});

Deno.test("cartoonset: every CSV problem names its file; skip keeps the valid pairs", async () => {
  await withTempDir(async (dir) => {
    const image = await solid(RED);
    await writeFiles(dir, {
      "cs/cs1.png": image,
      "cs/cs1.csv": '"hair", 3, 111\n"glasses", 1, 12\n',
      "cs/cs2.png": image, // no CSV
      "cs/cs3.csv": '"hair", 3, 111\n"glasses", 1, 12\n', // no image
      "cs/cs4.png": image,
      "cs/cs4.csv": '"hair", 3, 111\nglasses 1 12\n', // malformed line 2
      "cs/cs5.png": image,
      "cs/cs5.csv": '"hair", 111, 111\n"glasses", 1, 12\n', // index out of range
      "cs/cs6.png": image,
      "cs/cs6.csv": '"hair", 3, 112\n"glasses", 1, 12\n', // another total
      "cs/cs7.png": image,
      "cs/cs7.csv": '"hair", 3, 111\n', // missing attribute
    });
    const expected: Record<string, RegExp> = {
      "cs2.png": /image without its CSV \(expected cs2\.csv\)/,
      "cs3.csv": /CSV without its image/,
      "cs4.csv": /line 2: 'glasses 1 12' is not '"name", index, total'/,
      "cs5.csv": /line 1: hair index 111 is out of range \[0, 111\)/,
      "cs6.csv": /hair has 112 values, expected 111 \(as in cs1\.csv\)/,
      "cs7.csv": /missing attribute glasses/,
    };
    await assert.rejects(
      loadDataset({ kind: "cartoonset", path: "cs" }, options(dir)),
      (e: unknown) => {
        assert.ok(e instanceof UserError);
        for (const [name, reason] of Object.entries(expected)) {
          const line: string | undefined = e.message.split("\n").find((l) =>
            l.includes(`/cs/${name}:`)
          );
          assert.ok(line, `${name} is listed in ${e.message}`);
          assert.match(line, reason);
        }
        return true;
      },
    );
    const ds = await loadDataset(
      { kind: "cartoonset", path: "cs", onBadImage: "skip" },
      options(dir),
    );
    assert.equal(ds.count, 1);
    assert.deepEqual(labelsOf(ds), { hair: [3], glasses: [1] });
    assert.equal(ds.record.skipped.length, Object.keys(expected).length);
  });
});

Deno.test("missing or empty sources: a clear error naming the path", async () => {
  await withTempDir(async (dir) => {
    const experiment = join(dir, "exp.json");
    const at = { ...options(dir), experimentFile: experiment, baseDir: undefined };
    const cases: [DatasetConfig, RegExp][] = [
      [{ kind: "folder", path: "nope" }, /dataset\.path: folder .*nope does not exist/],
      [{ kind: "zip", path: "nope.zip" }, /dataset\.path: zip archive .*nope\.zip does not exist/],
      [{ kind: "cartoonset", path: "nope" }, /dataset\.path: folder .*nope does not exist/],
      [{ kind: "folder", path: "empty" }, /image folder .*empty contains no images/],
      [{ kind: "cartoonset", path: "empty" }, /contains no images and no CSVs/],
      [{ kind: "zip", path: "empty.zip" }, /zip archive .*empty\.zip is empty/],
      [{ kind: "zip", path: "docs.zip" }, /holds no images \(it holds 1 files, e\.g\. a\.txt\)/],
      [
        { kind: "zip", path: "docs.zip", root: "train" },
        /dataset\.root: .*holds no images under 'train'/,
      ],
      [{ kind: "zip", path: "fake.zip" }, /fake\.zip is not a readable zip archive/],
    ];
    await mkdir(join(dir, "empty", "sub"), { recursive: true });
    await writeFile(join(dir, "empty", "sub", "readme.md"), "hi");
    await writeFile(join(dir, "empty.zip"), await zipBytes({}));
    await writeFile(join(dir, "docs.zip"), await zipBytes({ "a.txt": "hi" }));
    await writeFile(join(dir, "fake.zip"), "not a zip at all");
    for (const [dataset, pattern] of cases) {
      await assert.rejects(loadDataset(dataset, at), (e: unknown) => {
        assert.ok(e instanceof UserError, String(e));
        assert.ok(e.message.startsWith(`${experiment}: `), e.message);
        assert.match(e.message, pattern);
        return true;
      }, JSON.stringify(dataset));
    }
  });
});

Deno.test("runs: bad images stop before any run folder; skipped files and labels in the manifest", async () => {
  await withTempDir(async (dir) => {
    const images = join(dir, "faces");
    for (let i = 0; i < 24; i++) {
      const rgb: Rgb = [i * 10, 255 - i * 10, (i * 37) % 256];
      await writeFiles(images, { [`${i % 2 ? "odd" : "even"}/${i}.png`]: await solid(rgb, 8) });
    }
    await writeFiles(images, { "odd/broken.png": "not a png", "even/empty.png": "" });
    const file = await experimentFile({
      ...TINY,
      dataset: { kind: "folder", path: images },
      train: { ...TINY.train, epochs: 1 },
    });
    const outRoot = join(dir, "out");
    await assert.rejects(runFile(file, { outRoot }), (e: unknown) => {
      assert.ok(e instanceof UserError);
      assert.match(e.message, /odd\/broken\.png: not a readable image/);
      assert.match(e.message, /even\/empty\.png: empty file/);
      return true;
    });
    assert.deepEqual(await readdir(outRoot).catch(() => []), []);

    const run = await runFile(file, { outRoot, sets: ['dataset.onBadImage="skip"'] });
    assert.equal(run.status, "complete");
    const record = run.manifest!.dataset!;
    assert.equal(record.count, 24);
    assert.equal(record.kind, "folder");
    assert.deepEqual(record.skipped.map((s) => s.file.slice(images.length + 1)).sort(), [
      "even/empty.png",
      "odd/broken.png",
    ]);
    assert.deepEqual(record.labels, [
      { name: "class", count: 2, values: ["even", "odd"], counts: { even: 12, odd: 12 } },
    ]);
    assert.equal(run.manifest!.summary.datasetSize, 24);

    // The training cache reuses that training for the same data, not once an image changed.
    const sets = ['dataset.onBadImage="skip"', "name=again"];
    const same = await runFile(file, { outRoot, sets });
    assert.equal(same.manifest!.reusedTraining?.dir, run.dir);
    await writeFiles(images, { "odd/1.png": await solid([1, 2, 3], 8) });
    const changed = await runFile(file, { outRoot, sets, force: true });
    assert.equal(changed.manifest!.reusedTraining, undefined);
    assert.notEqual(changed.manifest!.dataset!.contentHash, record.contentHash);
  });
});
