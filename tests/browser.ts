/**
 * Loads a page in Debian's headless `chromium` through the DevTools protocol (a WebSocket, no
 * library): collects console errors, uncaught exceptions and failed loads, evaluates an
 * expression in the page and takes a full-page screenshot.
 * @module
 */
import { join } from "node:path";

/** A DevTools protocol result or event: JSON whose shape the protocol documents. */
// deno-lint-ignore no-explicit-any
type Cdp = any;

/** Where chromium is, or null when it is not installed. */
export async function findChromium(): Promise<string | null> {
  for (const path of ["/usr/bin/chromium", "/usr/bin/chromium-browser"]) {
    if (await Deno.stat(path).then(() => true, () => false)) return path;
  }
  return null;
}

/** What a page load gave. */
export interface PageVisit {
  /** Console errors, uncaught exceptions and failed resource loads, one line each. */
  errors: string[];
  /** The value of the evaluated expression (JSON-serialisable). */
  value: unknown;
  /** A PNG of the whole page. */
  screenshot: Uint8Array;
}

/**
 * Opens `url` in a fresh headless chromium (its own profile folder), waits for the load event,
 * evaluates `expression` and screenshots the page `width` pixels wide; the browser is stopped
 * by its pid however this ends.
 */
export async function visitPage(
  url: string,
  options: { chromium: string; expression: string; width?: number },
): Promise<PageVisit> {
  const profile = await Deno.makeTempDir({ prefix: "ddpm-chromium-" });
  const browser = new Deno.Command(options.chromium, {
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--remote-debugging-port=0",
      `--user-data-dir=${profile}`,
      "about:blank",
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  let socket: WebSocket | undefined;
  try {
    const portFile = join(profile, "DevToolsActivePort");
    let lines: string[] = [];
    for (let i = 0; i < 150 && lines.length < 2; i++) {
      await new Promise((r) => setTimeout(r, 100));
      lines = (await Deno.readTextFile(portFile).catch(() => "")).trim().split("\n");
    }
    if (lines.length < 2) throw new Error("chromium did not open its DevTools port");
    const ws = new WebSocket(`ws://127.0.0.1:${lines[0]}${lines[1]}`);
    socket = ws;
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = reject;
    });
    let nextId = 1;
    const pending = new Map<
      number,
      { resolve: (v: unknown) => void; reject: (e: Error) => void }
    >();
    const listeners: ((method: string, params: Record<string, unknown>) => void)[] = [];
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.id !== undefined) {
        const waiter = pending.get(message.id);
        pending.delete(message.id);
        if (message.error) waiter?.reject(new Error(JSON.stringify(message.error)));
        else waiter?.resolve(message.result);
      } else listeners.forEach((l) => l(message.method, message.params));
    };
    const send = (method: string, params: unknown = {}, sessionId?: string): Promise<Cdp> => {
      const id = nextId++;
      ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
      return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
    };
    const { targetId } = await send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await send("Target.attachToTarget", { targetId, flatten: true });
    const errors: string[] = [];
    let loaded: () => void = () => {};
    const load = new Promise<void>((resolve) => loaded = resolve);
    listeners.push((method, params: Cdp) => {
      if (
        method === "Runtime.consoleAPICalled" &&
        (params.type === "error" || params.type === "assert")
      ) {
        errors.push(
          `console.${params.type}: ${
            params.args.map((a: Cdp) => a.value ?? a.description).join(" ")
          }`,
        );
      } else if (method === "Runtime.exceptionThrown") {
        errors.push(
          `exception: ${
            params.exceptionDetails.exception?.description ?? params.exceptionDetails.text
          }`,
        );
      } else if (method === "Log.entryAdded" && params.entry.level === "error") {
        errors.push(`${params.entry.source}: ${params.entry.text} ${params.entry.url ?? ""}`);
      } else if (method === "Page.loadEventFired") loaded();
    });
    for (const domain of ["Runtime", "Log", "Page"]) await send(`${domain}.enable`, {}, sessionId);
    await send("Emulation.setDeviceMetricsOverride", {
      width: options.width ?? 1300,
      height: 900,
      deviceScaleFactor: 1,
      mobile: false,
    }, sessionId);
    await send("Page.navigate", { url }, sessionId);
    await load;
    await new Promise((r) => setTimeout(r, 300)); // late console messages
    const evaluated = await send("Runtime.evaluate", {
      expression: options.expression,
      returnByValue: true,
      awaitPromise: true,
    }, sessionId);
    const shot = await send("Page.captureScreenshot", {
      format: "png",
      captureBeyondViewport: true,
    }, sessionId);
    const screenshot = Uint8Array.from(atob(shot.data), (c) => c.charCodeAt(0));
    return { errors, value: evaluated.result.value, screenshot };
  } finally {
    socket?.close();
    try {
      browser.kill("SIGTERM");
    } catch {
      // already gone
    }
    await browser.status;
    await Deno.remove(profile, { recursive: true }).catch(() => {});
  }
}
