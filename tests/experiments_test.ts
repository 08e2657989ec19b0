import assert from "node:assert/strict";
import { loadExperiment } from "../src/config/mod.ts";
import { makeSchedule, terminalSignal } from "../src/diffusion/schedule.ts";
import { countParameters } from "../src/model/mod.ts";
import { trainingHash } from "../src/run/training_cache.ts";

const dir = new URL("../experiments/", import.meta.url).pathname;
const load = async (name: string) => (await loadExperiment(`${dir}${name}`)).config;

Deno.test("every shipped experiment file validates", async () => {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) if (e.name.endsWith(".json")) names.push(e.name);
  for await (const e of Deno.readDir(`${dir}base`)) names.push(`base/${e.name}`);
  assert.ok(names.length >= 16);
  for (const name of names.sort()) await load(name);
});

Deno.test("seed 002: the anime DDPM and the experiments that share its training", async () => {
  const base = await load("base/anime-ddpm.json");
  assert.equal(countParameters(base.model), 22_071_043);
  assert.equal(base.schedule.timesteps, 1000);
  assert.ok(Math.abs(terminalSignal(makeSchedule(base.schedule)).alphaBarT - 4.04e-5) < 1e-7);
  const hash = trainingHash(base);
  for (const name of ["variance-beta", "variance-posterior", "recovery", "ddim-50"]) {
    assert.equal(trainingHash(await load(`${name}.json`)), hash, `${name} reuses the training`);
  }
  assert.equal((await load("variance-beta.json")).sampler.variance, "beta");
  assert.equal((await load("variance-posterior.json")).sampler.variance, "posterior");
  const ddim = await load("ddim-50.json");
  assert.deepEqual([ddim.sampler.kind, ddim.sampler.steps, ddim.sampler.count], ["ddim", 50, 256]);
  assert.deepEqual((await load("recovery.json")).recovery?.t, [100, 500, 1000]);
});

Deno.test("seed 003 and the loss comparison", async () => {
  const cosine = await load("cosine-l1.json");
  assert.equal(cosine.schedule.kind, "cosine");
  assert.deepEqual(
    [cosine.schedule.timesteps, cosine.loss.kind, cosine.train.batchSize, cosine.optimizer.lr],
    [1000, "l1", 64, 2e-4],
  );
  const losses = await Promise.all(["l1", "l2", "huber"].map((l) => load(`loss-${l}.json`)));
  assert.deepEqual(losses.map((c) => c.loss.kind), ["l1", "l2", "huber"]);
  // loss-l1 is q1-t200 under another name: it reuses that training.
  assert.equal(trainingHash(losses[0]), trainingHash(await load("q1-t200.json")));
});
