/**
 * Parameter declarations, as a PyTorch module's constructor makes them: each block declares its
 * parameters in its own constructor, under its state-dict prefix, next to the forward code that
 * reads them. Declaring makes no tensor (no TensorFlow.js), so the model can be counted cheaply;
 * `createModel` turns the declarations into variables in declaration order, which is PyTorch's
 * state-dict order.
 * @module
 */

/** How a parameter is initialised (PyTorch's defaults). */
export type ParamInit =
  | { kind: "uniform"; fanIn: number } // U(-1/sqrt(fanIn), 1/sqrt(fanIn)): Conv2d/Linear weight and bias
  | { kind: "ones" }
  | { kind: "zeros" };

/** One parameter: PyTorch name, shape in this library's layout, and initialiser. */
export interface ParamSpec {
  /** PyTorch state-dict name. */
  name: string;
  /** Shape here (conv HWIO, linear [in, out]). */
  shape: number[];
  /** Initialiser. */
  init: ParamInit;
}

/** Where a block declares its parameters: a state-dict prefix over a shared list. */
export class ParamScope {
  /** The state-dict prefix of this scope (`downs.0.1`), empty at the root. */
  readonly prefix: string;
  readonly #specs: ParamSpec[];

  /** A root scope with an empty list, or a scope at `prefix` over `specs`. */
  constructor(prefix = "", specs: ParamSpec[] = []) {
    this.prefix = prefix;
    this.#specs = specs;
  }

  /** The scope of a sub-module (`scope.at("block1.proj")`). */
  at(path: string | number): ParamScope {
    return new ParamScope(
      this.prefix === "" ? String(path) : `${this.prefix}.${path}`,
      this.#specs,
    );
  }

  /** Declares `<prefix>.<name>` and returns its full name. */
  declare(name: string, shape: number[], init: ParamInit): string {
    const full = this.prefix === "" ? name : `${this.prefix}.${name}`;
    this.#specs.push({ name: full, shape, init });
    return full;
  }

  /** Every parameter declared in this scope's list so far, in declaration order. */
  get specs(): readonly ParamSpec[] {
    return this.#specs;
  }
}

/** Number of scalars of a list of parameters. */
export function countSpecs(specs: readonly ParamSpec[]): number {
  return specs.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
}
