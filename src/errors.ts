/**
 * Errors meant for the user: they name the file, the JSON path and what was expected, and the
 * CLI prints them without a stack trace.
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
