/**
 * Errors meant for the user, which the CLI prints without a stack trace (with one when
 * `DDPM_LAB_DEBUG=1`): {@linkcode UserError} for bad input (it names the file, the JSON path and
 * what was expected; exit code 2, nothing is created) and {@linkcode RunFailure} for what goes
 * wrong while a command runs (exit code 1).
 * @module
 */

/** Where a user error was found and what was expected there. */
export interface UserErrorDetails {
  /** The file the error is in, when there is one. */
  file?: string;
  /** The 1-based line in the file where the offending value is written, when known. */
  line?: number;
  /** The 1-based column that goes with `line`. */
  column?: number;
  /** The JSON path inside the file, e.g. `schedule.timesteps`. */
  path?: string;
  /** What was expected, e.g. `an integer >= 1`. */
  expected?: string;
}

/**
 * An error caused by the user's input, printed as `file:line:column: path: message (expected
 * ...)` (the editor-clickable form; line and column only when known).
 */
export class UserError extends Error {
  /** The file, JSON path and expectation of the error. */
  readonly details: UserErrorDetails;

  /** Builds the error; `details` fills the location prefix and the expectation. */
  constructor(message: string, details: UserErrorDetails = {}) {
    super(formatUserError(message, details));
    this.name = "UserError";
    this.details = details;
  }
}

function formatUserError(message: string, details: UserErrorDetails): string {
  const position = details.file !== undefined && details.line !== undefined
    ? `:${details.line}:${details.column ?? 1}`
    : "";
  const file = details.file === undefined ? undefined : details.file + position;
  const where = [file, details.path].filter((p) => p !== undefined && p !== "").join(": ");
  const expected = details.expected ? ` (expected ${details.expected})` : "";
  return `${where ? where + ": " : ""}${message}${expected}`;
}

/** What a {@linkcode RunFailure} says besides what happened. */
export interface RunFailureDetails {
  /** What was kept: the last checkpoint, the run folder and its status. */
  kept?: string;
  /** What to do, one line each (a command to run is a line of its own). */
  todo?: string[];
  /** The error it explains (printed with its stack when `DDPM_LAB_DEBUG=1`). */
  cause?: unknown;
}

/**
 * An expected failure while a command runs: a diverging loss, a full disk, a folder that cannot
 * be written, a dataset that vanished, an engine that cannot start, a Slurm job that failed. Its
 * message says what happened (first line), what was kept and what to do:
 *
 * ```
 * the loss diverged: it became Infinity at step 2 of 6 (epoch 1 of 2)
 *   kept: ...
 *   to do: ...
 * ```
 */
export class RunFailure extends Error {
  /** What happened, the first line of the message. */
  readonly what: string;
  /** What was kept. */
  readonly kept: string | undefined;
  /** What to do, one line each. */
  readonly todo: readonly string[];

  /** Builds the message from `what`, `details.kept` and `details.todo`. */
  constructor(what: string, details: RunFailureDetails = {}) {
    super(formatRunFailure(what, details), { cause: details.cause });
    this.name = "RunFailure";
    this.what = what;
    this.kept = details.kept;
    this.todo = details.todo ?? [];
  }
}

function formatRunFailure(what: string, details: RunFailureDetails): string {
  const lines = [what];
  if (details.kept) lines.push(`  kept: ${details.kept}`);
  const todo = details.todo ?? [];
  if (todo.length > 0) {
    lines.push(`  to do: ${todo[0]}`);
    for (const line of todo.slice(1)) lines.push(`    ${line}`);
  }
  return lines.join("\n");
}

/**
 * What the CLI prints for `err`: `error: <message>` for a {@linkcode UserError} or
 * {@linkcode RunFailure}, and with `debug` (`DDPM_LAB_DEBUG=1`) their stacks and causes' too;
 * the stack of anything else (a bug).
 */
export function describeError(err: unknown, options: { debug: boolean }): string {
  const expected = err instanceof UserError || err instanceof RunFailure;
  if (expected && !options.debug) return `error: ${err.message}`;
  if (!(err instanceof Error)) return String(err);
  const parts = [
    expected ? `error: ${err.message}\n${stackFrames(err)}` : err.stack ?? err.message,
  ];
  for (let cause = err.cause; cause !== undefined && options.debug;) {
    parts.push(
      `caused by: ${cause instanceof Error ? (cause.stack ?? cause.message) : String(cause)}`,
    );
    cause = cause instanceof Error ? cause.cause : undefined;
  }
  return parts.join("\n");
}

/** The `    at ...` lines of an error's stack. */
function stackFrames(err: Error): string {
  return (err.stack ?? "").split("\n").filter((l) => /^\s+at /.test(l)).join("\n");
}
