/**
 * Test-side support for element-call.spec.ts: builds the widget host, serves it and stock
 * Element Call from the page's origin, and reads what the Element Call iframe receives.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { BrowserContext, Frame, Page, Route } from "@playwright/test";
import { build } from "vite";

const HERE = fileURLToPath(new URL(".", import.meta.url));
const WEB = path.resolve(HERE, "../..");
const EC_PACKAGE = path.join(WEB, "node_modules/@element-hq/element-call-embedded");
const EC_DIST = path.join(EC_PACKAGE, "dist");
/** Build output of the host (ignored by git, like everything under node_modules). */
const HOST_OUT = path.join(WEB, "node_modules/.cache/koinos-ec-host");

/**
 * The gateway accepts only the page's own origin, so the host and Element Call are served from
 * there too: Playwright answers these paths itself, everything else (control's REST API, the
 * rtc token endpoints) goes to the real control plane.
 */
export const ORIGIN = process.env.KOINOS_WEB_URL ?? "http://localhost:8080";
export const HOST_URL = `${ORIGIN}/ec-host/index.html`;
export const ELEMENT_CALL_URL = `${ORIGIN}/ec/index.html`;

export function elementCallVersion(): string {
  return (JSON.parse(readFileSync(path.join(EC_PACKAGE, "package.json"), "utf8")) as { version: string }).version;
}

/** Bundles host.ts (matrix-js-sdk + matrix-widget-api) with the project's own Vite. */
export async function buildHost(): Promise<void> {
  await build({
    configFile: false,
    root: HERE,
    base: "/ec-host/",
    logLevel: "warn",
    build: {
      outDir: HOST_OUT,
      emptyOutDir: true,
      target: "es2022",
      sourcemap: false,
      chunkSizeWarningLimit: 5000,
    },
  });
}

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".map": "application/json",
  ".wasm": "application/wasm",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".woff": "font/woff",
  ".woff2": "font/woff2",
  ".mp3": "audio/mpeg",
  ".ogg": "audio/ogg",
  ".tflite": "application/octet-stream",
};

async function fulfillFrom(route: Route, root: string, prefix: string): Promise<void> {
  const { pathname } = new URL(route.request().url());
  const relative = decodeURIComponent(pathname.slice(prefix.length)) || "index.html";
  const file = path.resolve(root, relative);
  if (!file.startsWith(root + path.sep) || !existsSync(file) || !statSync(file).isFile()) {
    await route.fulfill({ status: 404, body: "not found" });
    return;
  }
  const contentType = TYPES[path.extname(file)] ?? "application/octet-stream";
  await route.fulfill({ path: file, contentType, headers: { "Cache-Control": "no-store" } });
}

/** Serves /ec/ (stock Element Call) and /ec-host/ (the widget host) in this context. */
export async function serveElementCall(context: BrowserContext): Promise<void> {
  const escaped = ORIGIN.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  await context.route(new RegExp(`^${escaped}/ec/`), (route) => fulfillFrom(route, EC_DIST, "/ec/"));
  await context.route(new RegExp(`^${escaped}/ec-host/`), (route) => fulfillFrom(route, HOST_OUT, "/ec-host/"));
}

/**
 * Element Call keeps its LiveKit room to itself, so the test keeps a list of the peer
 * connections each frame creates (`window.__koinosPeerConnections`) to read their getStats().
 * The constructor is wrapped with a Proxy: instances, prototype and statics are the browser's own.
 */
export async function trackPeerConnections(context: BrowserContext): Promise<void> {
  await context.addInitScript(() => {
    const w = window as unknown as { __koinosPeerConnections?: RTCPeerConnection[]; RTCPeerConnection: typeof RTCPeerConnection };
    if (w.__koinosPeerConnections) return;
    const list: RTCPeerConnection[] = [];
    w.__koinosPeerConnections = list;
    w.RTCPeerConnection = new Proxy(w.RTCPeerConnection, {
      construct(target, args, newTarget) {
        const pc = Reflect.construct(target, args, newTarget) as RTCPeerConnection;
        list.push(pc);
        return pc;
      },
    });
  });
}

/** The Element Call iframe of a host page. */
export function elementCallFrame(page: Page): Frame | undefined {
  return page.frames().find((f) => f.url().startsWith(ELEMENT_CALL_URL));
}

export interface InboundMedia {
  /** Open (not closed) peer connections in the frame. */
  openPeerConnections: number;
  framesDecoded: number;
  audioBytesReceived: number;
  /** frameHeight of every inbound video stream that has one. */
  videoHeights: number[];
}

/** Sums inbound-rtp stats over the frame's open peer connections. */
export async function inboundMedia(frame: Frame): Promise<InboundMedia> {
  return frame.evaluate(async () => {
    const pcs = (window as unknown as { __koinosPeerConnections?: RTCPeerConnection[] }).__koinosPeerConnections ?? [];
    const out = { openPeerConnections: 0, framesDecoded: 0, audioBytesReceived: 0, videoHeights: [] as number[] };
    for (const pc of pcs) {
      if (pc.connectionState === "closed") continue;
      out.openPeerConnections++;
      const report = await pc.getStats();
      report.forEach((stat: { type?: string; kind?: string; framesDecoded?: number; bytesReceived?: number; frameHeight?: number }) => {
        if (stat.type !== "inbound-rtp") return;
        if (stat.kind === "video") {
          out.framesDecoded += stat.framesDecoded ?? 0;
          if (stat.frameHeight) out.videoHeights.push(stat.frameHeight);
        }
        if (stat.kind === "audio") out.audioBytesReceived += stat.bytesReceived ?? 0;
      });
    }
    return out;
  });
}
