/**
 * A small ONNX graph builder over `onnx-proto` (the protobufjs classes generated from ONNX's
 * onnx.proto, v1.10.2: IR version 8). Nodes are appended in topological order, initializers are
 * stored as little-endian `raw_data`, and names are made unique by a counter, so the same calls
 * give the same bytes.
 * @module
 */
import onnxProto from "onnx-proto";

const { onnx } = onnxProto;

/** The IR version written (onnx 1.10-1.12), the highest the bundled onnx.proto describes. */
export const IR_VERSION = 8;
/** The default-domain opset the graphs use (onnx 1.12); ORT and every recent tool read it. */
export const OPSET = 17;

/** An attribute value: a number is an INT unless listed in `floats`, arrays are INTS/FLOATS. */
export type AttributeValue = number | number[] | string | { float: number } | { floats: number[] };

/** A dimension of a graph input or output: a fixed size or a symbolic name (e.g. "batch"). */
export type Dim = number | string;

function attribute(name: string, value: AttributeValue): onnxProto.onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof value === "string") {
    return { name, type: T.STRING, s: new TextEncoder().encode(value) };
  }
  if (typeof value === "number") return { name, type: T.INT, i: value };
  if (Array.isArray(value)) return { name, type: T.INTS, ints: value };
  if ("float" in value) return { name, type: T.FLOAT, f: value.float };
  return { name, type: T.FLOATS, floats: value.floats };
}

function valueInfo(name: string, dims: Dim[]): onnxProto.onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: onnx.TensorProto.DataType.FLOAT,
        shape: {
          dim: dims.map((d) => typeof d === "number" ? { dimValue: d } : { dimParam: d }),
        },
      },
    },
  };
}

/** Builds one float32 ONNX graph; every method returns the name of the value it produced. */
export class GraphBuilder {
  #nodes: onnxProto.onnx.INodeProto[] = [];
  #initializers: onnxProto.onnx.ITensorProto[] = [];
  #inputs: onnxProto.onnx.IValueInfoProto[] = [];
  #outputs: onnxProto.onnx.IValueInfoProto[] = [];
  #names = new Set<string>();
  #counter = 0;

  #fresh(hint: string): string {
    let name = hint;
    while (this.#names.has(name)) name = `${hint}_${++this.#counter}`;
    this.#names.add(name);
    return name;
  }

  /** Declares a float32 graph input. */
  input(name: string, dims: Dim[]): string {
    this.#names.add(name);
    this.#inputs.push(valueInfo(name, dims));
    return name;
  }

  /** Declares `value` as a graph output named `name` (an Identity node renames it). */
  output(value: string, name: string, dims: Dim[]): void {
    this.#names.add(name);
    this.#nodes.push({ opType: "Identity", input: [value], output: [name], name });
    this.#outputs.push(valueInfo(name, dims));
  }

  /** A float32 constant stored in the graph (a weight); returns its name. */
  float(name: string, data: Float32Array, dims: number[]): string {
    const size = dims.reduce((a, b) => a * b, 1);
    if (size !== data.length) {
      throw new Error(`onnx: ${name} has ${data.length} values, shape [${dims}] needs ${size}`);
    }
    const unique = this.#fresh(name);
    const bytes = new Uint8Array(data.length * 4);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < data.length; i++) view.setFloat32(4 * i, data[i], true);
    this.#initializers.push({
      name: unique,
      dims,
      dataType: onnx.TensorProto.DataType.FLOAT,
      rawData: bytes,
    });
    return unique;
  }

  /** An int64 constant (shapes, axes); returns its name. */
  int64(name: string, values: number[]): string {
    const unique = this.#fresh(name);
    this.#initializers.push({
      name: unique,
      dims: [values.length],
      dataType: onnx.TensorProto.DataType.INT64,
      int64Data: values,
    });
    return unique;
  }

  /** Appends a node `opType(inputs) -> outputs` with attributes; returns its output names. */
  nodeN(
    opType: string,
    inputs: string[],
    options: { outputs: number; name: string; attributes?: Record<string, AttributeValue> },
  ): string[] {
    const outputs = Array.from(
      { length: options.outputs },
      (_, i) => this.#fresh(options.outputs === 1 ? options.name : `${options.name}:${i}`),
    );
    this.#nodes.push({
      opType,
      input: inputs,
      output: outputs,
      name: outputs[0],
      attribute: Object.entries(options.attributes ?? {}).map(([k, v]) => attribute(k, v)),
    });
    return outputs;
  }

  /** Appends a node with one output named after `name`; returns that output's name. */
  node(
    opType: string,
    inputs: string[],
    options: { name: string; attributes?: Record<string, AttributeValue> },
  ): string {
    return this.nodeN(opType, inputs, { ...options, outputs: 1 })[0];
  }

  /** The serialised ModelProto (opset {@link OPSET}, IR {@link IR_VERSION}). */
  encode(options: { graphName: string; metadata?: Record<string, string> }): Uint8Array {
    const model: onnxProto.onnx.IModelProto = {
      irVersion: IR_VERSION,
      opsetImport: [{ domain: "", version: OPSET }],
      producerName: "ddpm-lab",
      graph: {
        name: options.graphName,
        node: this.#nodes,
        initializer: this.#initializers,
        input: this.#inputs,
        output: this.#outputs,
      },
      metadataProps: Object.entries(options.metadata ?? {}).map(([key, value]) => ({
        key,
        value,
      })),
    };
    return onnx.ModelProto.encode(onnx.ModelProto.create(model)).finish();
  }

  /** Number of nodes so far (for tests and summaries). */
  get nodeCount(): number {
    return this.#nodes.length;
  }
}

/** Decodes a serialised model (tests and the cache check read its metadata). */
export function decodeModel(bytes: Uint8Array): onnxProto.onnx.ModelProto {
  return onnx.ModelProto.decode(bytes);
}
