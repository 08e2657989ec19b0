/**
 * Experiment files as JSON with comments (like `deno.json`), parsed by `jsonc-parser`: syntax
 * errors say file, line, column and what was expected, and the parse tree gives the line and
 * column of any JSON path for the schema errors found later.
 * @module
 */
import {
  findNodeAtLocation,
  type Node,
  type ParseError,
  type ParseErrorCode,
  parseTree,
  printParseErrorCode,
} from "jsonc-parser";
import { UserError } from "../errors.ts";

/** A 1-based line and column in a text. */
export interface LineColumn {
  /** 1-based line number. */
  line: number;
  /** 1-based column, in UTF-16 code units like V8's positions. */
  column: number;
}

/** A parsed JSON-with-comments text: its value and what is needed to locate a path in it. */
export interface JsonDocument {
  /** The value; object keys are own properties (a `__proto__` key included). */
  value: unknown;
  /** The text without a leading byte order mark. */
  text: string;
  /** The parse tree, with the offset of every node. */
  tree: Node;
}

/** The 1-based line and column of a 0-based offset in `text`. */
export function lineColumnAt(text: string, offset: number): LineColumn {
  const clamped = Math.max(0, Math.min(offset, text.length));
  const before = text.slice(0, clamped);
  const lineStart = before.lastIndexOf("\n") + 1;
  return { line: before.split("\n").length, column: clamped - lineStart + 1 };
}

/**
 * Parses JSON that may hold `//` and `/* *\/` comments, throwing a {@linkcode UserError} that
 * names the file, the line and column of the first syntax error and what was expected there.
 * Trailing commas stay errors, as in `JSON.parse`. A leading byte order mark is ignored.
 */
export function parseJsonc(text: string, file: string): JsonDocument {
  const body = text.startsWith("\uFEFF") ? text.slice(1) : text;
  const errors: ParseError[] = [];
  const tree = parseTree(body, errors, { allowTrailingComma: false, disallowComments: false });
  if (errors.length > 0 || tree === undefined) {
    throw syntaxError(body, file, errors[0] ?? { error: VALUE_EXPECTED, offset: 0, length: 0 });
  }
  return { value: valueOf(tree), text: body, tree };
}

/**
 * The line and column where `path` is written in `document`: the key of the property when the
 * path ends at one, else the value. Undefined when the document does not have the path.
 */
export function locate(
  document: JsonDocument,
  path: readonly PropertyKey[],
): LineColumn | undefined {
  if (path.some((segment) => typeof segment === "symbol")) return undefined;
  const node = findNodeAtLocation(document.tree, path as (string | number)[]);
  if (node === undefined) return undefined;
  const at = node.parent?.type === "property" ? node.parent : node;
  return lineColumnAt(document.text, at.offset);
}

/** The JSON value of a tree node; object keys are defined, not assigned. */
function valueOf(node: Node): unknown {
  switch (node.type) {
    case "object": {
      const object: Record<string, unknown> = {};
      for (const property of node.children ?? []) {
        const [key, value] = property.children ?? [];
        if (key === undefined || value === undefined) continue;
        Object.defineProperty(object, String(key.value), {
          value: valueOf(value),
          enumerable: true,
          writable: true,
          configurable: true,
        });
      }
      return object;
    }
    case "array":
      return (node.children ?? []).map(valueOf);
    default:
      return node.value;
  }
}

/** jsonc-parser's code for a missing value (its enum is a `const enum`). */
const VALUE_EXPECTED = 4 as ParseErrorCode;

/** What was expected, by `printParseErrorCode` name. */
const EXPECTED: Record<string, string> = {
  InvalidSymbol: "a JSON value",
  ValueExpected: "a JSON value",
  PropertyNameExpected: "a double-quoted property name",
  ColonExpected: "':' after property name",
  CommaExpected: "',' between values",
  CloseBraceExpected: "'}'",
  CloseBracketExpected: "']'",
  EndOfFileExpected: "end of input after the JSON value",
  UnexpectedEndOfString: "a closing '\"' on the same line",
  UnexpectedEndOfComment: "'*/' closing the comment",
  InvalidEscapeCharacter: 'an escape character: one of " \\ / b f n r t u',
  InvalidUnicode: "4 hex digits after '\\u'",
  InvalidCharacter: "an escape sequence such as \\n instead of a control character",
  InvalidNumberFormat: "a number",
};

function syntaxError(text: string, file: string, error: ParseError): UserError {
  const { line, column } = lineColumnAt(text, error.offset);
  const reason = commonMistake(text, error.offset) ??
    `unexpected ${describeChar(text, error.offset)}`;
  return new UserError(`invalid JSON at line ${line}, column ${column}: ${reason}`, {
    file,
    expected: EXPECTED[printParseErrorCode(error.error)],
  });
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
  if (at === "'") return "strings and property names take double quotes";
  return undefined;
}
