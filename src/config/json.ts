/**
 * Parsing JSON text with errors that say where: file, line, column and what was expected.
 * @module
 */
import { UserError } from "../errors.ts";

/** A 1-based line and column in a text. */
export interface LineColumn {
  /** 1-based line number. */
  line: number;
  /** 1-based column, in UTF-16 code units like V8's positions. */
  column: number;
}

/** Where a JSON text stops being valid and what would have been valid there. */
export interface JsonErrorLocation {
  /** 0-based offset of the offending character (the text's length at an early end). */
  offset: number;
  /** What was expected at the offset, when known. */
  expected?: string;
}

/** The 1-based line and column of a 0-based offset in `text`. */
export function lineColumnAt(text: string, offset: number): LineColumn {
  const clamped = Math.max(0, Math.min(offset, text.length));
  const before = text.slice(0, clamped);
  const lineStart = before.lastIndexOf("\n") + 1;
  return { line: before.split("\n").length, column: clamped - lineStart + 1 };
}

/**
 * Parses JSON text, throwing a {@linkcode UserError} that names the file, the line and column
 * (computed from the position V8 reports) and, when known, what was expected. A leading byte
 * order mark is ignored.
 */
export function parseJsonText(text: string, file: string): unknown {
  const body = text.startsWith("\uFEFF") ? text.slice(1) : text;
  try {
    return JSON.parse(body);
  } catch (error) {
    if (!(error instanceof SyntaxError)) throw error;
    throw jsonSyntaxError(body, file, error.message);
  }
}

function jsonSyntaxError(text: string, file: string, v8Message: string): UserError {
  // V8: "Expected ',' or '}' after property value in JSON at position 9 (line 2 column 2)",
  // "Unexpected token 'x', "{"a": x}" is not valid JSON" (no position), "Unexpected end of JSON
  // input" (no position). The scanner below fills the gaps.
  const scanned = locateJsonError(text);
  const positionMatch = /\bat position (\d+)/.exec(v8Message);
  const offset = positionMatch ? Number(positionMatch[1]) : scanned?.offset ?? text.length;
  const { line, column } = lineColumnAt(text, offset);
  const v8Expected = /^Expected (.+?) in JSON at position/.exec(v8Message)?.[1];
  const sameSpot = scanned !== undefined && scanned.offset === offset;
  const expected = v8Expected !== undefined
    ? withArticle(v8Expected)
    : sameSpot
    ? scanned.expected
    : undefined;
  const reason = commonMistake(text, offset) ??
    (v8Expected === undefined ? describeV8Reason(v8Message, text, offset) : undefined);
  return new UserError(
    `invalid JSON at line ${line}, column ${column}${reason ? `: ${reason}` : ""}`,
    { file, expected },
  );
}

function withArticle(phrase: string): string {
  return /^[a-z]/.test(phrase) ? `a ${phrase}` : phrase;
}

function describeV8Reason(message: string, text: string, offset: number): string {
  if (/^Unexpected (token|end of JSON input)/.test(message)) {
    return `unexpected ${describeChar(text, offset)}`;
  }
  const reason = message.replace(/\s+at position \d+.*$/s, "").replace(/ in JSON$/, "");
  return reason.charAt(0).toLowerCase() + reason.slice(1);
}

function describeChar(text: string, offset: number): string {
  if (offset >= text.length) return "end of input";
  const char = String.fromCodePoint(text.codePointAt(offset) ?? 0);
  if (char === "\n" || char === "\r") return "end of line";
  if (char === "\t") return "tab";
  return `character '${char}'`;
}

function commonMistake(text: string, offset: number): string | undefined {
  const at = text.charAt(offset);
  if (text.slice(0, offset).trimEnd().endsWith(",") && (at === "}" || at === "]")) {
    return "trailing commas are not allowed";
  }
  if (at === "/" && (text.charAt(offset + 1) === "/" || text.charAt(offset + 1) === "*")) {
    return "comments are not allowed";
  }
  if (at === "'") return "strings and property names take double quotes";
  return undefined;
}

class ScanStop {
  constructor(readonly offset: number, readonly expected: string) {}
}

/**
 * Finds the first offset where `text` stops being valid JSON, with what was expected there;
 * undefined when the text is valid. A small RFC 8259 scanner, used where V8 gives no position.
 */
export function locateJsonError(text: string): JsonErrorLocation | undefined {
  let i = 0;
  const stop = (expected: string): never => {
    throw new ScanStop(i, expected);
  };
  const skipSpace = (): void => {
    while (i < text.length && " \t\n\r".includes(text[i])) i++;
  };
  const digits = (expected: string): void => {
    if (!/[0-9]/.test(text.charAt(i))) stop(expected);
    while (/[0-9]/.test(text.charAt(i))) i++;
  };
  const literal = (word: string): void => {
    for (const char of word) {
      if (text.charAt(i) !== char) stop(`'${word}'`);
      i++;
    }
  };
  const string = (): void => {
    i++; // the opening quote
    while (true) {
      if (i >= text.length) stop("a closing '\"'");
      const char = text[i];
      if (char === '"') {
        i++;
        return;
      }
      if (char.charCodeAt(0) < 0x20) {
        stop("an escape sequence such as \\n instead of a control character");
      }
      if (char === "\\") {
        i++;
        const escape = text.charAt(i);
        if (escape === "u") {
          for (let k = 0; k < 4; k++) {
            i++;
            if (!/[0-9a-fA-F]/.test(text.charAt(i))) stop("4 hex digits after '\\u'");
          }
        } else if (!'"\\/bfnrt'.includes(escape) || escape === "") {
          stop('an escape character: one of " \\ / b f n r t u');
        }
      }
      i++;
    }
  };
  const number = (): void => {
    if (text[i] === "-") i++;
    if (text.charAt(i) === "0") i++;
    else digits("a digit");
    if (text.charAt(i) === ".") {
      i++;
      digits("a digit after '.'");
    }
    if (text.charAt(i) === "e" || text.charAt(i) === "E") {
      i++;
      if (text.charAt(i) === "+" || text.charAt(i) === "-") i++;
      digits("a digit in the exponent");
    }
  };
  const value = (): void => {
    skipSpace();
    const char = text.charAt(i);
    if (char === "{") object();
    else if (char === "[") array();
    else if (char === '"') string();
    else if (char === "-" || /[0-9]/.test(char)) number();
    else if (char === "t") literal("true");
    else if (char === "f") literal("false");
    else if (char === "n") literal("null");
    else stop("a JSON value");
    skipSpace();
  };
  const object = (): void => {
    i++;
    skipSpace();
    if (text.charAt(i) === "}") {
      i++;
      return;
    }
    while (true) {
      if (text.charAt(i) !== '"') stop("a double-quoted property name");
      string();
      skipSpace();
      if (text.charAt(i) !== ":") stop("':' after property name");
      i++;
      value();
      if (text.charAt(i) === "}") {
        i++;
        return;
      }
      if (text.charAt(i) !== ",") stop("',' or '}' after property value");
      i++;
      skipSpace();
    }
  };
  const array = (): void => {
    i++;
    skipSpace();
    if (text.charAt(i) === "]") {
      i++;
      return;
    }
    while (true) {
      value();
      if (text.charAt(i) === "]") {
        i++;
        return;
      }
      if (text.charAt(i) !== ",") stop("',' or ']' after array element");
      i++;
    }
  };
  try {
    value();
    if (i < text.length) stop("end of input after the JSON value");
    return undefined;
  } catch (error) {
    if (error instanceof ScanStop) return { offset: error.offset, expected: error.expected };
    throw error;
  }
}
