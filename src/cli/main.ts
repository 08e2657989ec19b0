/**
 * The command-line entry point of `deno task run|verify|diff|runs|sweep|report`. Unlike `mod.ts`, which also
 * exports the library, it loads TensorFlow.js only for the commands that train or sample, so
 * `--dry-run`, `diff` and `runs` start fast.
 * @module
 */
import { main } from "./mod.ts";

Deno.exit(await main(Deno.args));
