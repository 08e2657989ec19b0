/**
 * Data parallelism for training and sampling: worker threads, each with its own single-threaded
 * wasm (XNNPACK) instance and its own copy of the network, compute the gradients (or the
 * forward pass) of a shard of the batch while the main thread computes shard 0. The main thread
 * keeps the only authoritative weights and the optimizer: it sends the weights to the workers
 * whenever they changed and sums the shards' gradients in a fixed order, so a run is
 * deterministic for a given number of workers.
 *
 * Integration: `const workers = await GradientWorkers.start({ count: 1, model })`, then pass
 * `workers` in the options of `trainStep` (src/train/step.ts); `close()` them when done.
 * @module
 */
import type { ModelConfig } from "../../../schemas/experiment.ts";
import type { BackendName } from "../../backend/mod.ts";
import type { ConditionInput, DenoiseModel } from "../../model/mod.ts";
import { tf } from "../../tf.ts";
import { shardRanges, sliceCondition } from "../split.ts";
import type {
  GradientTask,
  StepBatch,
  WeightsUpdate,
  WorkerReply,
  WorkerRequest,
} from "./protocol.ts";

/** Options of {@link GradientWorkers.start}. */
export interface GradientWorkersOptions {
  /** Number of worker threads (the main thread computes one more shard). */
  count: number;
  /** The model section: every worker builds the same network. */
  model: ModelConfig;
  /** Backend of the workers: `wasm` (the default) or `cpu`. */
  backend?: BackendName;
  /** A conditional model's attribute sizes (see `modelShape` in src/model). */
  labelSizes?: number[];
}

/** One shard for a worker: its examples and how to weight them. */
export interface ShardJob {
  /** The shard's examples. */
  batch: StepBatch;
  /** Schedule and loss. */
  task: GradientTask;
  /** Examples in the whole step's batch. */
  total: number;
  /** At most this many examples per forward/backward pass. */
  microBatch?: number;
}

/** A worker's result: the weighted loss and the gradients by parameter name. */
export interface ShardResult {
  /** The shard's mean loss times its share of the batch. */
  loss: number;
  /** Gradients by parameter name (views into one transferred buffer). */
  grads: Map<string, Float32Array>;
}

type Pending = { resolve: (reply: WorkerReply) => void; reject: (e: Error) => void };

class WorkerHandle {
  readonly worker: Worker;
  readonly #pending: Pending[] = [];
  #failed: Error | undefined;
  /** The weights (tensor data ids) this worker last received. */
  sentWeights: object[] = [];

  constructor() {
    this.worker = new Worker(new URL("./worker.ts", import.meta.url).href, { type: "module" });
    this.worker.onmessage = (e: MessageEvent<WorkerReply>) => {
      const p = this.#pending.shift();
      if (p === undefined) return;
      if (e.data.kind === "error") p.reject(new Error(`gradient worker: ${e.data.message}`));
      else p.resolve(e.data);
    };
    this.worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.#fail(new Error(`gradient worker crashed: ${e.message}`));
    };
  }

  #fail(error: Error): void {
    this.#failed = error;
    for (const p of this.#pending.splice(0)) p.reject(error);
  }

  request(message: WorkerRequest, transfer: Transferable[] = []): Promise<WorkerReply> {
    if (this.#failed) return Promise.reject(this.#failed);
    return new Promise((resolve, reject) => {
      this.#pending.push({ resolve, reject });
      this.worker.postMessage(message, transfer);
    });
  }

  terminate(): void {
    this.worker.terminate();
    this.#fail(new Error("gradient worker closed"));
  }
}

/**
 * A tensor's values: a view of the wasm heap when the backend has one (no copy; read it before
 * the next allocation), else `dataSync()`.
 */
export function readValues(t: tf.Tensor): Float32Array {
  const backend = tf.backend() as unknown as {
    typedArrayFromHeap?: (info: tf.TensorInfo) => Float32Array;
  };
  if (t.dtype === "float32" && typeof backend.typedArrayFromHeap === "function") {
    return backend.typedArrayFromHeap(t);
  }
  return t.dataSync() as Float32Array;
}

function expect<K extends WorkerReply["kind"]>(
  reply: WorkerReply,
  kind: K,
): Extract<WorkerReply, { kind: K }> {
  if (reply.kind !== kind) throw new Error(`gradient worker answered ${reply.kind}, not ${kind}`);
  return reply as Extract<WorkerReply, { kind: K }>;
}

/** A pool of worker threads computing gradients and forward passes on shards of a batch. */
export class GradientWorkers {
  readonly #workers: WorkerHandle[];
  readonly #names: string[];
  readonly #sizes: number[];
  /** The backend the workers run, e.g. `wasm`. */
  readonly backend: string;

  private constructor(workers: WorkerHandle[], ready: Extract<WorkerReply, { kind: "ready" }>) {
    this.#workers = workers;
    this.#names = ready.names;
    this.#sizes = ready.sizes;
    this.backend = ready.backend;
  }

  /** Starts `count` workers and builds the network in each; resolves when all are ready. */
  static async start(options: GradientWorkersOptions): Promise<GradientWorkers> {
    const backend = options.backend ?? "wasm";
    if (backend !== "wasm" && backend !== "cpu") {
      throw new Error(`gradient workers run the wasm or cpu backend, not ${backend}`);
    }
    const count = Math.max(0, Math.floor(options.count));
    const workers = Array.from({ length: count }, () => new WorkerHandle());
    try {
      const replies = await Promise.all(
        workers.map((w) =>
          w.request({
            kind: "init",
            backend,
            model: options.model,
            ...(options.labelSizes ? { labelSizes: options.labelSizes } : {}),
          })
        ),
      );
      const ready = replies.map((r) => expect(r, "ready"));
      return new GradientWorkers(
        workers,
        ready[0] ?? { kind: "ready", names: [], sizes: [], backend: "none" },
      );
    } catch (e) {
      for (const w of workers) w.terminate();
      throw e;
    }
  }

  /** Number of workers. */
  get size(): number {
    return this.#workers.length;
  }

  #checkParams(params: Map<string, tf.Variable>): tf.Variable[] {
    const vars = [...params.values()];
    const names = [...params.keys()];
    const same = names.length === this.#names.length &&
      names.every((n, i) => n === this.#names[i] && vars[i].size === this.#sizes[i]);
    if (!same) throw new Error("gradient workers: the model's parameters differ from the workers'");
    return vars;
  }

  /** The weights update for worker `w`: nothing when it has the current weights already. */
  #weights(w: WorkerHandle, vars: tf.Variable[], packed: () => Float32Array): WeightsUpdate {
    const ids = vars.map((v) => v.dataId);
    if (ids.length === w.sentWeights.length && ids.every((id, i) => id === w.sentWeights[i])) {
      return {};
    }
    w.sentWeights = ids;
    return { weights: packed() };
  }

  #packer(vars: tf.Variable[]): () => Float32Array {
    let packed: Float32Array | undefined;
    return () => {
      if (packed === undefined) {
        packed = new Float32Array(this.#sizes.reduce((a, b) => a + b, 0));
        let offset = 0;
        for (const v of vars) {
          packed.set(readValues(v), offset);
          offset += v.size;
        }
      }
      return packed;
    };
  }

  /**
   * Sends the current weights (when they changed) and computes the loss and gradients of
   * `jobs[i]` in worker i. The weights are read before this returns, so the caller may update
   * them once the promise is made.
   */
  gradients(params: Map<string, tf.Variable>, jobs: ShardJob[]): Promise<ShardResult[]> {
    if (jobs.length > this.#workers.length) {
      return Promise.reject(new Error(`${jobs.length} shards for ${this.size} gradient workers`));
    }
    const vars = this.#checkParams(params);
    const packed = this.#packer(vars);
    const replies = jobs.map((job, i) => {
      const w = this.#workers[i];
      const update = this.#weights(w, vars, packed);
      // The last worker gets the packed weights without a copy (transferred).
      const transfer = i === jobs.length - 1 && update.weights
        ? [update.weights.buffer as ArrayBuffer]
        : [];
      return w.request({ kind: "gradients", ...job, ...update }, transfer);
    });
    return Promise.all(replies).then((rs) =>
      rs.map((r) => {
        const { loss, grads } = expect(r, "gradients");
        const byName = new Map<string, Float32Array>();
        let offset = 0;
        this.#names.forEach((name, i) => {
          byName.set(name, grads.subarray(offset, offset + this.#sizes[i]));
          offset += this.#sizes[i];
        });
        return { loss, grads: byName };
      })
    );
  }

  /**
   * The network's output for each job (x_t NHWC and float timesteps), job i in worker i, with
   * the weights `params` (sent only when they changed since the last call).
   */
  predict(
    params: Map<string, tf.Variable>,
    jobs: {
      x: Float32Array;
      t: Float32Array;
      shape: [number, number, number];
      condition?: ConditionInput;
    }[],
  ): Promise<Float32Array[]> {
    if (jobs.length > this.#workers.length) {
      return Promise.reject(new Error(`${jobs.length} shards for ${this.size} workers`));
    }
    const vars = this.#checkParams(params);
    const packed = this.#packer(vars);
    return Promise.all(jobs.map((job, i) => {
      const w = this.#workers[i];
      const update = this.#weights(w, vars, packed);
      const transfer = i === jobs.length - 1 && update.weights
        ? [update.weights.buffer as ArrayBuffer]
        : [];
      return w.request({ kind: "predict", ...job, ...update }, transfer)
        .then((r) => expect(r, "predict").y);
    }));
  }

  /**
   * `model.predict(x, t, {condition})` with the batch split like a training step's: shards 1..
   * in the workers, shard 0 on this thread meanwhile. The result is a new tensor (the caller
   * owns it).
   */
  async predictSharded(
    model: DenoiseModel,
    inputs: { x: tf.Tensor4D; t: tf.Tensor1D; condition?: ConditionInput },
  ): Promise<tf.Tensor4D> {
    const { x, t, condition } = inputs;
    const rows = x.shape[0];
    const [[, localEnd], ...shards] = shardRanges(rows, 1 + this.size);
    if (shards.length === 0) return tf.tidy(() => model.predict(x, t, { condition }));
    const part = (from: number, to: number) =>
      condition ? { condition: sliceCondition(condition, { from, to, rows }) } : {};
    const shape = x.shape.slice(1) as [number, number, number];
    const per = shape[0] * shape[1] * shape[2];
    const xs = (await x.data()) as Float32Array;
    const ts = (await t.data()) as Float32Array;
    const pending = this.predict(
      model.params,
      shards.map(([from, to]) => ({
        x: xs.slice(from * per, to * per),
        t: ts.slice(from, to),
        shape,
        ...part(from, to),
      })),
    );
    const local = tf.tidy(() =>
      model.predict(
        tf.slice(x, [0, 0, 0, 0], [localEnd, ...shape]),
        tf.slice(t, [0], [localEnd]),
        part(0, localEnd),
      )
    );
    try {
      const remote = await pending;
      return tf.tidy(() =>
        tf.concat([
          local,
          ...remote.map((r, k) => tf.tensor4d(r, [shards[k][1] - shards[k][0], ...shape])),
        ], 0)
      );
    } finally {
      local.dispose();
    }
  }

  /** Stops the workers (pending requests fail). */
  close(): void {
    for (const w of this.#workers) w.terminate();
  }
}
