/**
 * A checkpoint's ONNX export, cached as `checkpoint/model.onnx` beside the weights it was made
 * from (./export.ts builds the graph from the traced layer graph of src/model).
 * @module
 */
import { join } from "node:path";
import type { ModelConfig } from "../../schemas/experiment.ts";
import { sha256Hex, writeFileAtomic } from "../io/files.ts";
import { decodeSafetensors } from "../io/safetensors.ts";
import { decodeModel } from "./graph.ts";
import { buildUnetOnnx } from "./export.ts";

/** Bumped when the graph the exporter writes changes, so that cached model.onnx files are redone. */
const EXPORTER_VERSION = "2";

/** The cached `model.onnx` of a checkpoint: its bytes and whether an existing file was reused. */
export interface ExportedModel {
  /** Path of model.onnx. */
  path: string;
  /** Its bytes. */
  bytes: Uint8Array;
  /** True when the file on disk was already the export of these weights. */
  reused: boolean;
}

/**
 * `<checkpointDir>/model.onnx` for the weights of that checkpoint (`ema.safetensors` with
 * `options.ema`, else `model.safetensors`), written atomically, or the existing file when its
 * metadata says it was exported from the same weight bytes, image size and exporter version.
 */
export async function exportCheckpoint(
  checkpointDir: string,
  options: { model: ModelConfig; size: number; ema: boolean; labelSizes?: number[] },
): Promise<ExportedModel> {
  const weightsFile = options.ema ? "ema.safetensors" : "model.safetensors";
  const raw = await Deno.readFile(join(checkpointDir, weightsFile));
  const metadata = {
    "ddpm-lab.exporter": EXPORTER_VERSION,
    "ddpm-lab.weights": `${weightsFile} sha256:${sha256Hex(raw)}`,
    "ddpm-lab.size": String(options.size),
  };
  const path = join(checkpointDir, "model.onnx");
  try {
    const existing = await Deno.readFile(path);
    const props = new Map(decodeModel(existing).metadataProps.map((p) => [p.key, p.value]));
    if (Object.entries(metadata).every(([k, v]) => props.get(k) === v)) {
      return { path, bytes: existing, reused: true };
    }
  } catch {
    // no model.onnx yet, or not a readable one: export it
  }
  const bytes = buildUnetOnnx(options.model, decodeSafetensors(raw).tensors, {
    size: options.size,
    metadata,
    ...(options.labelSizes ? { labelSizes: options.labelSizes } : {}),
  });
  await writeFileAtomic(path, bytes);
  return { path, bytes, reused: false };
}
