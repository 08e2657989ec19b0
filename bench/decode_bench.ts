/**
 * The `decode` phase of `deno task bench`: the first decode of a folder and a zip of N 64x64 PNG
 * faces (the course's manga.zip has 12,000) into the decoded cache, and a start from that cache.
 *
 * The PNGs are the default DiceBear faces (seed 0, 64 px, as the experiments use), written once
 * to `.cache/bench/faces-<N>/` and `faces-<N>.zip` and kept for later runs.
 * @module
 */
import { Buffer } from "node:buffer";
import { join } from "node:path";
import sharp from "sharp";
// @ts-types="@types/yazl"
import yazl from "yazl";
import { loadAvatars } from "../src/data/avatars.ts";
import { forEachLimited } from "../src/data/decode.ts";
import type { DatasetConfig } from "../schemas/experiment.ts";
import { loadDataset } from "../src/data/mod.ts";

/** One measured load. */
export interface DecodeTiming {
  /** What was loaded. */
  what: string;
  /** Wall-clock seconds. */
  seconds: number;
  /** Images per second. */
  imagesPerSecond: number;
  /** Whether the decoded cache answered. */
  fromCache: boolean;
}

async function writeFixtures(dir: string, count: number): Promise<{ folder: string; zip: string }> {
  const folder = join(dir, `faces-${count}`);
  const zip = join(dir, `faces-${count}.zip`);
  try {
    await Deno.stat(zip);
    return { folder, zip };
  } catch {
    // not written yet
  }
  console.log(`  writing ${count} 64x64 PNG faces to ${folder} (once)...`);
  const faces = await loadAvatars(0, { count, renderSize: 64 });
  const archive = new yazl.ZipFile();
  const pngs: Uint8Array[] = new Array(count);
  await forEachLimited(count, async (i) => {
    const raw = faces.pixels.subarray(i * 64 * 64 * 3, (i + 1) * 64 * 64 * 3);
    pngs[i] = new Uint8Array(
      await sharp(raw, { raw: { width: 64, height: 64, channels: 3 } }).png().toBuffer(),
    );
  }, { concurrency: 16 });
  await Deno.mkdir(join(folder, "manga", "train", "faces"), { recursive: true });
  for (let i = 0; i < count; i++) {
    const name = `manga/train/faces/${String(i).padStart(5, "0")}.png`;
    await Deno.writeFile(join(folder, name), pngs[i]);
    archive.addBuffer(Buffer.from(pngs[i]), name, { compress: false });
  }
  archive.end();
  const chunks: Uint8Array[] = [];
  for await (const chunk of archive.outputStream) chunks.push(chunk as Uint8Array);
  await Deno.writeFile(zip, Buffer.concat(chunks));
  return { folder, zip };
}

/**
 * Times, for a folder and a zip of `options.count` 64x64 PNGs, the first decode (resize to
 * `options.size`) into an empty decoded cache and a second, cached start.
 */
export async function benchDecode(
  options: { count: number; size: number; cacheRoot: string },
): Promise<DecodeTiming[]> {
  const { folder, zip } = await writeFixtures(join(options.cacheRoot, "bench"), options.count);
  const decodedCacheDir = await Deno.makeTempDir({ prefix: "ddpm-lab-decode-bench-" });
  const out: DecodeTiming[] = [];
  try {
    const sources: [string, DatasetConfig][] = [
      ["folder", { kind: "folder", path: join(folder, "manga", "train") }],
      ["zip", { kind: "zip", path: zip, root: "manga/train" }],
    ];
    for (const [name, dataset] of sources) {
      for (const pass of ["first decode", "cached start"]) {
        const started = performance.now();
        const ds = await loadDataset(dataset, {
          transform: { size: options.size, horizontalFlip: true },
          seed: 0,
          decodedCacheDir,
        });
        const seconds = (performance.now() - started) / 1000;
        out.push({
          what: `${name}, ${pass}`,
          seconds,
          imagesPerSecond: ds.count / seconds,
          fromCache: ds.record.fromCache,
        });
      }
    }
  } finally {
    await Deno.remove(decodedCacheDir, { recursive: true });
  }
  return out;
}
