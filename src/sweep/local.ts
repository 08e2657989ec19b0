/**
 * The local launcher: each point runs as a child process (`run --sweep-index`), at most `jobs`
 * at a time, its stdout and stderr appended to the point's log. A point that reuses the training
 * of another waits until that one has finished.
 * @module
 */
import { dirname } from "node:path";
import { pointCommand } from "./command.ts";
import type { LaunchItem } from "./plan.ts";

/** What the local launcher needs to start points. */
export interface LocalOptions {
  /** The experiment file. */
  file: string;
  /** Outputs root of the runs. */
  outRoot: string;
  /** The sweep's `--set` overrides. */
  sets: readonly string[];
  /** At most this many points at once. */
  jobs: number;
  /** The log file of point i. */
  logOf: (index: number) => string;
  /** Called when a point starts and when it ends (with its exit code). */
  onEvent?: (event: { index: number; code?: number; seconds?: number }) => Promise<void> | void;
  /** Stops starting points (running ones get SIGTERM: they checkpoint and stop). */
  signal?: AbortSignal;
  /** Pass the children's output through to this process's stdout and stderr too. */
  echo?: boolean;
}

async function copyStream(
  stream: ReadableStream<Uint8Array>,
  sinks: { file: Deno.FsFile; echo?: { writeSync(p: Uint8Array): number } },
): Promise<void> {
  for await (const chunk of stream) {
    await sinks.file.write(chunk);
    if (sinks.echo) sinks.echo.writeSync(chunk);
  }
}

async function runPoint(index: number, options: LocalOptions): Promise<number> {
  const [command, ...args] = pointCommand(options.file, {
    index,
    outRoot: options.outRoot,
    sets: options.sets,
  });
  const logPath = options.logOf(index);
  await Deno.mkdir(dirname(logPath), { recursive: true });
  const log = await Deno.open(logPath, { append: true, create: true });
  try {
    const child = new Deno.Command(command, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      // Its own session: Ctrl-C in the terminal reaches only the sweep, which then sends one
      // SIGTERM (a second signal would make the point exit without its checkpoint).
      detached: true,
    }).spawn();
    const stop = () => child.kill("SIGTERM");
    options.signal?.addEventListener("abort", stop, { once: true });
    const echo = options.echo;
    await Promise.all([
      copyStream(child.stdout, { file: log, echo: echo ? Deno.stdout : undefined }),
      copyStream(child.stderr, { file: log, echo: echo ? Deno.stderr : undefined }),
    ]);
    const { code } = await child.status;
    options.signal?.removeEventListener("abort", stop);
    return code;
  } finally {
    log.close();
  }
}

/**
 * Runs `items` (each after the point it waits for, if any, has ended) with at most
 * `options.jobs` child processes at once. Resolves when every started point has ended; points
 * not started because of the signal are left alone.
 */
export async function runLocal(items: readonly LaunchItem[], options: LocalOptions): Promise<void> {
  const waiting = [...items];
  const ended = new Set<number>();
  const running = new Map<number, Promise<void>>();
  while (waiting.length > 0 || running.size > 0) {
    const next = options.signal?.aborted || running.size >= options.jobs
      ? -1
      : waiting.findIndex((item) => item.after === null || ended.has(item.after));
    if (next >= 0) {
      const [item] = waiting.splice(next, 1);
      const started = performance.now();
      await options.onEvent?.({ index: item.index });
      running.set(
        item.index,
        runPoint(item.index, options).then(async (code) => {
          running.delete(item.index);
          ended.add(item.index);
          const seconds = (performance.now() - started) / 1000;
          await options.onEvent?.({ index: item.index, code, seconds });
        }),
      );
      continue;
    }
    if (running.size === 0) break; // aborted, or waiting on points that are not in this launch
    await Promise.race(running.values());
  }
}
