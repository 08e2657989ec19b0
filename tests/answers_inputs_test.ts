/**
 * The numbers the answers read from run folders that the runner writes: recovery.json's
 * distances (seed 002) and the peak memory of the manifest summary (question 1).
 */
import assert from "node:assert/strict";
import { recoveryDistances, type RecoveryRow } from "../src/diffusion/recovery.ts";
import { parseHighWaterMark, peakRssMiB } from "../src/run/memory.ts";

/** `count` images of `pixels` values, image i filled with `value(i)`. */
function images(count: number, pixels: number, value: (i: number) => number): Float32Array {
  return Float32Array.from({ length: count * pixels }, (_, k) => value(Math.floor(k / pixels)));
}

Deno.test("recovery distances: RMS pixel differences on a 0-1 scale, per image", () => {
  const pixels = 12; // 2x2 RGB
  const original = images(2, pixels, () => -1); // black
  const row: RecoveryRow = {
    t: 100,
    original,
    noised: images(2, pixels, () => 0), // grey: 0.5 from black
    beta: original.slice(), // recovered exactly
    posterior: images(2, pixels, (i) => (i === 0 ? 1 : 3)), // white (3 is clamped to 1)
  };
  const random = images(2, pixels, (i) => (i === 0 ? 0 : 1)); // grey, white
  const [d] = recoveryDistances([row], { count: 2, random });
  assert.equal(d.t, 100);
  assert.deepEqual(d.noisedToOriginal, { mean: 0.5, std: 0, n: 2 });
  assert.deepEqual(d.toOriginal.beta, { mean: 0, std: 0, n: 2 });
  assert.deepEqual(d.toOriginal.posterior, { mean: 1, std: 0, n: 2 });
  // black vs grey 0.5 and black vs white 1: mean 0.75, sample std √((0.25² · 2) / 1)
  assert.equal(d.originalToRandom!.mean, 0.75);
  assert.ok(Math.abs(d.originalToRandom!.std - Math.SQRT1_2 / 2) < 1e-12);
  assert.deepEqual(d.toRandom!.beta, d.originalToRandom);
  assert.equal(d.toRandom!.posterior.mean, 0.25); // white vs grey, white vs white
  // without other training images there is no scale
  const [alone] = recoveryDistances([row], { count: 2 });
  assert.equal(alone.toRandom, null);
  assert.equal(alone.originalToRandom, null);
});

Deno.test("peak memory: VmHWM of /proc/self/status in MiB", () => {
  const status = "Name:\tdeno\nVmPeak:\t 9000000 kB\nVmHWM:\t  524288 kB\nVmRSS:\t  100 kB\n";
  assert.equal(parseHighWaterMark(status), 512);
  assert.equal(parseHighWaterMark("Name:\tdeno\n"), null);
  const peak = peakRssMiB();
  // this process: more than a few MiB, less than the machine
  assert.ok(peak !== null && peak > 10 && peak < 1e6, `peak ${peak}`);
});
