/**
 * Checkpoints: `model.safetensors` (parameters by PyTorch name, this library's layout),
 * `optimizer.safetensors` (Adam moments), `ema.safetensors` (the weight average, when enabled)
 * and `state.json` (step counts), in one folder.
 * @module
 */
import { join } from "node:path";
import { writeFilesAtomic } from "../io/files.ts";
import { decodeSafetensors, encodeSafetensors } from "../io/safetensors.ts";
import { type DenoiseModel, exportParams, importParams } from "../model/mod.ts";
import type { Ema } from "./ema.ts";
import type { Adam } from "./optimizer.ts";

/** Training progress stored next to the weights. */
export interface CheckpointState {
  /** Optimizer steps done. */
  step: number;
  /** Epoch of the last step (0-based). */
  epoch: number;
}

/** What a checkpoint holds besides its state: the weights, Adam's moments and the EMA. */
export interface CheckpointParts {
  /** The model whose parameters are saved. */
  model: DenoiseModel;
  /** The optimizer whose moments are saved. */
  optimizer: Adam;
  /** The weight average, when the experiment keeps one. */
  ema?: Ema | null;
}

/**
 * Writes a checkpoint of `model` and `optimizer` into `dir` (created if needed) as one set:
 * every file goes to a temporary file first and `state.json` is renamed into place last, so a
 * write that fails (a full disk) leaves the previous checkpoint as it was.
 */
export async function saveCheckpoint(
  dir: string,
  parts: CheckpointParts & { state: CheckpointState },
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const layout = { layout: "NHWC: conv HWIO, linear [in, out]; names as the PyTorch reference" };
  const files = [{
    path: join(dir, "model.safetensors"),
    data: encodeSafetensors(await exportParams(parts.model), { metadata: layout }),
  }];
  const opt = await parts.optimizer.exportState();
  files.push({
    path: join(dir, "optimizer.safetensors"),
    data: encodeSafetensors(opt.tensors, { metadata: { step: String(opt.step) } }),
  });
  if (parts.ema) {
    const ema = await parts.ema.exportState();
    files.push({
      path: join(dir, "ema.safetensors"),
      data: encodeSafetensors(ema.tensors, { metadata: { ...layout, step: String(ema.step) } }),
    });
  }
  const state = new TextEncoder().encode(JSON.stringify(parts.state, null, 2) + "\n");
  await writeFilesAtomic([...files, { path: join(dir, "state.json"), data: state }]);
}

/** Loads a checkpoint written by {@link saveCheckpoint} into `model` (and `optimizer` if given). */
export async function loadCheckpoint(
  dir: string,
  parts: { model: DenoiseModel; optimizer?: Adam; ema?: Ema | null },
): Promise<CheckpointState> {
  const model = decodeSafetensors(await Deno.readFile(join(dir, "model.safetensors")));
  importParams(parts.model, model.tensors);
  if (parts.optimizer) {
    const opt = decodeSafetensors(await Deno.readFile(join(dir, "optimizer.safetensors")));
    parts.optimizer.importState({ step: Number(opt.metadata.step ?? 0), tensors: opt.tensors });
  }
  if (parts.ema) {
    const ema = decodeSafetensors(await Deno.readFile(join(dir, "ema.safetensors")));
    parts.ema.importState({ step: Number(ema.metadata.step ?? 0), tensors: ema.tensors });
  }
  return JSON.parse(await Deno.readTextFile(join(dir, "state.json"))) as CheckpointState;
}
