/**
 * bench/gpu/pack.sh builds the bundles the GPU machine runs (it broke once when ONNX Runtime's
 * native `.node` files entered the CLI's imports): `--check` bundles them into a temporary
 * folder and starts the CLI bundle there, without node_modules.
 */
import assert from "node:assert/strict";

Deno.test("bench/gpu/pack.sh --check: the bundles build and the CLI bundle starts", async () => {
  const root = new URL("..", import.meta.url).pathname;
  const out = await new Deno.Command("bash", {
    args: [`${root}/bench/gpu/pack.sh`, "--check"],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.ok(out.success, text);
  assert.match(text, /usage:/);
  assert.match(text, /pack --check: the bundles build and the CLI bundle starts/);
});
