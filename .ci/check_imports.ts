/**
 * The import guard of CI: fails on any file-level import cycle among the project's own modules
 * and on any import that goes against the layers of ARCHITECTURE.md (a folder of src/ may
 * import only from its own layer or the layers below it). Reads the module graph that
 * `deno info --json` gives for every entry point (mod.ts, src/cli/main.ts, the benches and
 * tests), so type-only imports count too.
 *
 * ```sh
 * deno run -A .ci/check_imports.ts
 * ```
 * @module
 */
import { relative } from "node:path";

/**
 * The layers of src/, lowest first: a module may import from its own layer and any lower
 * one, never from a higher one. Keep in step with ARCHITECTURE.md.
 */
export const LAYERS: readonly (readonly string[])[] = [
  ["src/errors.ts", "src/rng.ts", "src/tf.ts", "schemas", "src/io"],
  ["src/data", "src/diffusion", "src/model"],
  ["src/config", "src/backend", "src/train", "src/gpu"],
  ["src/eval", "src/onnx"],
  ["src/run"],
  ["src/sweep", "src/report"],
  ["src/cli"],
  ["mod.ts"],
];

/** The layer index of a project path, or undefined outside the layered code (tests, bench). */
export function layerOf(path: string): number | undefined {
  const i = LAYERS.findIndex((layer) => layer.some((p) => path === p || path.startsWith(`${p}/`)));
  return i < 0 ? undefined : i;
}

/** Every elementary cycle's representative: a cycle through each strongly connected component. */
export function findCycles(edges: Map<string, string[]>): string[][] {
  // Tarjan's strongly connected components; a component of more than one file is a cycle.
  let index = 0;
  const stack: string[] = [];
  const on = new Set<string>();
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const out: string[][] = [];
  const visit = (v: string): void => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    on.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || (edges.get(v) ?? []).includes(v)) out.push(component.sort());
    }
  };
  for (const v of [...edges.keys()].sort()) if (!idx.has(v)) visit(v);
  return out;
}

/** The project's import graph (project-relative paths) from `deno info --json` of `roots`. */
export async function importGraph(root: string, roots: string[]): Promise<Map<string, string[]>> {
  const edges = new Map<string, string[]>();
  for (const entry of roots) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", entry],
      cwd: root,
      stdout: "piped",
      stderr: "inherit",
    }).output();
    if (!out.success) throw new Error(`deno info ${entry} failed`);
    const info = JSON.parse(new TextDecoder().decode(out.stdout)) as {
      modules: {
        specifier: string;
        dependencies?: { code?: { specifier: string }; type?: { specifier: string } }[];
      }[];
    };
    const local = (s: string) =>
      s.startsWith("file://") ? relative(root, new URL(s).pathname) : undefined;
    for (const m of info.modules) {
      const from = local(m.specifier);
      if (from === undefined || from.startsWith("node_modules")) continue;
      const to = new Set(edges.get(from) ?? []);
      for (const d of m.dependencies ?? []) {
        for (const s of [d.code?.specifier, d.type?.specifier]) {
          const p = s === undefined ? undefined : local(s);
          if (p !== undefined && !p.startsWith("node_modules")) to.add(p);
        }
      }
      edges.set(from, [...to].sort());
    }
  }
  return edges;
}

/** The problems of a graph: cycles, and imports from a lower layer to a higher one. */
export function importProblems(edges: Map<string, string[]>): string[] {
  const problems = findCycles(edges).map((c) => `import cycle: ${c.join(" <-> ")}`);
  for (const [from, tos] of edges) {
    const a = layerOf(from);
    if (a === undefined) continue;
    for (const to of tos) {
      const b = layerOf(to);
      if (b !== undefined && b > a) {
        problems.push(`upward import (see ARCHITECTURE.md): ${from} imports ${to}`);
      }
    }
  }
  return problems;
}

if (import.meta.main) {
  const root = new URL("..", import.meta.url).pathname;
  const roots = ["mod.ts", "src/cli/main.ts"];
  for (const dir of ["tests", "bench"]) {
    for await (const e of Deno.readDir(`${root}/${dir}`)) {
      if (e.isFile && e.name.endsWith(".ts")) roots.push(`${dir}/${e.name}`);
    }
  }
  const problems = importProblems(await importGraph(root, roots));
  for (const p of problems) console.error(p);
  if (problems.length > 0) {
    console.error(`${problems.length} import problem(s): see ARCHITECTURE.md`);
    Deno.exit(1);
  }
  console.log("imports: no cycles, no upward imports");
}
