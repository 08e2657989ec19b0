/**
 * A gradient worker (see src/train/parallel/mod.ts): its own tfjs backend and copy of the
 * network; answers the requests of src/train/parallel/protocol.ts in order.
 * @module
 */
import { initBackend } from "../../backend/mod.ts";
import { createModel, type DenoiseModel } from "../../model/mod.ts";
import { deriveRng } from "../../rng.ts";
import { tf } from "../../tf.ts";
import { accumulateGradients } from "../step.ts";
import { readValues } from "./mod.ts";
import type { WeightsUpdate, WorkerReply, WorkerRequest } from "./protocol.ts";

let model: DenoiseModel | undefined;

function setWeights(update: WeightsUpdate): DenoiseModel {
  if (model === undefined) throw new Error("the worker was not initialised");
  if (update.weights === undefined) return model;
  let offset = 0;
  for (const v of model.params.values()) {
    const values = update.weights.subarray(offset, offset + v.size);
    tf.tidy(() => v.assign(tf.tensor(values, v.shape)));
    offset += v.size;
  }
  if (offset !== update.weights.length) throw new Error("weights of the wrong size");
  return model;
}

async function handle(message: WorkerRequest): Promise<[WorkerReply, Transferable[]]> {
  switch (message.kind) {
    case "init": {
      const info = await initBackend(message.backend);
      model?.dispose();
      model = createModel(message.model, {
        rng: deriveRng(0, "parallel/worker"),
        labelSizes: message.labelSizes,
      });
      const vars = [...model.params.entries()];
      return [{
        kind: "ready",
        names: vars.map(([name]) => name),
        sizes: vars.map(([, v]) => v.size),
        backend: info.name,
        threads: info.threads,
      }, []];
    }
    case "gradients": {
      const m = setWeights(message);
      const { loss, grads } = tf.tidy(() =>
        accumulateGradients(m, message.batch, {
          ...message.task,
          total: message.total,
          microBatch: message.microBatch,
        })
      );
      const names = [...m.params.keys()];
      const packed = new Float32Array(names.reduce((n, name) => n + m.params.get(name)!.size, 0));
      let offset = 0;
      for (const name of names) {
        const g = grads[name];
        if (g === undefined) throw new Error(`no gradient for ${name}`);
        packed.set(readValues(g), offset);
        offset += g.size;
      }
      const value = loss.dataSync()[0];
      tf.dispose([loss, ...Object.values(grads)]);
      return [{ kind: "gradients", loss: value, grads: packed }, [packed.buffer]];
    }
    case "predict": {
      const m = setWeights(message);
      const n = message.t.length;
      const y = tf.tidy(() =>
        m.predict(tf.tensor4d(message.x, [n, ...message.shape]), tf.tensor1d(message.t), {
          condition: message.condition,
        })
      );
      const values = Float32Array.from(y.dataSync() as Float32Array);
      y.dispose();
      return [{ kind: "predict", y: values }, [values.buffer]];
    }
  }
}

// Requests are handled one at a time, in order (replies are matched to requests by order).
const scope = self as unknown as Worker;
let queue: Promise<void> = Promise.resolve();
scope.onmessage = (e: MessageEvent<WorkerRequest>) => {
  queue = queue.then(async () => {
    const post = scope.postMessage.bind(scope);
    try {
      const [reply, transfer] = await handle(e.data);
      post(reply, transfer);
    } catch (err) {
      post({ kind: "error", message: err instanceof Error ? err.message : String(err) });
    }
  });
};
