/**
 * Prints the WebGPU adapter that Deno's `navigator.gpu` finds: its info, features and limits,
 * as JSON (for bench/gpu/run.sh and bench/RESULTS.md). Exits 1 when there is none.
 *
 * ```sh
 * deno run -A bench/gpu/adapter.ts
 * ```
 * @module
 */

/** The adapter's info, features and limits as plain JSON, or undefined without an adapter. */
export async function describeAdapter(): Promise<Record<string, unknown> | undefined> {
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (gpu === undefined) return undefined;
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (adapter === null) return undefined;
  const info: Record<string, unknown> = {};
  for (const key of ["vendor", "architecture", "device", "description"] as const) {
    info[key] = adapter.info[key];
  }
  info.isFallbackAdapter = (adapter.info as { isFallbackAdapter?: boolean }).isFallbackAdapter;
  const limits: Record<string, number> = {};
  for (const key in adapter.limits) {
    const value = adapter.limits[key as keyof GPUSupportedLimits];
    if (typeof value === "number") limits[key] = value;
  }
  return { info, features: [...adapter.features].sort(), limits };
}

if (import.meta.main) {
  const described = await describeAdapter();
  if (described === undefined) {
    console.error("no WebGPU adapter (navigator.gpu gave none)");
    Deno.exit(1);
  }
  console.log(JSON.stringify(described, null, 2));
}
