/**
 * The one gate to TensorFlow.js internals. Two parts of ddpm-lab reach below tfjs' public API:
 * the wasm kernels (`wasm_heap.ts` and the kernels built on it read and write the wasm heap and
 * the backend's tensor records) and the low-memory backward pass (`tape.ts` walks the engine's
 * gradient tape). Both were written against one tfjs version. At start-up
 * {@linkcode tfjsInternalsUsable} compares the installed version with it; on a mismatch it
 * warns once, and the callers fall back to tfjs' stock kernels and `tf.variableGrads` (same
 * maths, more memory and time; stock wasm lacks `Conv2DBackpropFilter`, so wasm then trains only
 * where tfjs provides it).
 * @module
 */
import { tf } from "../tf.ts";

/** The tfjs version whose internals the wasm kernels and the tape walk were written against. */
export const TESTED_TFJS_VERSION = "4.22.0";

/** Whether the internals may be used, and why not when they may not. */
export interface InternalsCheck {
  /** True when the installed tfjs is the tested one. */
  usable: boolean;
  /** The installed tfjs version. */
  version: string;
  /** Why they are not used (a mismatch), for the warning. */
  reason?: string;
}

/** Compares a tfjs version with {@linkcode TESTED_TFJS_VERSION}. */
export function checkTfjsInternals(version: string): InternalsCheck {
  if (version === TESTED_TFJS_VERSION) return { usable: true, version };
  return {
    usable: false,
    version,
    reason: `tfjs ${version} is installed, but ddpm-lab's wasm kernels and low-memory backward ` +
      `pass use internals of tfjs ${TESTED_TFJS_VERSION}: falling back to tfjs' stock kernels ` +
      "and tf.variableGrads (slower, more memory)",
  };
}

let decided: InternalsCheck | undefined;

/**
 * Whether the tfjs internals may be used in this process: checked once, with a warning on the
 * console when they may not.
 */
export function tfjsInternalsUsable(): boolean {
  if (decided === undefined) {
    decided = checkTfjsInternals(tf.version.tfjs);
    if (!decided.usable) console.warn(`warning: ${decided.reason}`);
  }
  return decided.usable;
}
