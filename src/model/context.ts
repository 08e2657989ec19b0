/**
 * What a forward pass of the network's modules reads (./unet.ts, ./conditioning.ts).
 * @module
 */
import type { Rng } from "../rng.ts";
import type { tf } from "../tf.ts";
import type { ConditionInput } from "./conditioning.ts";
import type * as Layers from "./layers.ts";

/** What a forward pass reads: the parameters, the ops, and (training) the dropout generator. */
export interface ForwardContext {
  /** The parameter tensors by state-dict name. */
  p: Layers.ParamLookup;
  /** TensorFlow.js. */
  tf: typeof tf;
  /** The layer functions of ./layers.ts. */
  layers: typeof Layers;
  /** Training only: the generator of the dropout masks; without it dropout is off. */
  dropoutRng?: Rng;
  /** A conditional network's labels; absent: the null embedding (unconditional). */
  condition?: ConditionInput;
}
