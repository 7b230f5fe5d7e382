import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { test as base, expect, type Browser, type BrowserContext, type Page } from "@playwright/test";

export const DEMO_PASSWORD = process.env.KOINOS_DEMO_PASSWORD ?? "koinos-dev";
export const DEMO_CASE = process.env.KOINOS_DEMO_CASE ?? "Demo case";
/** Connecting to LiveKit on a loaded 2-core box can take a while. */
export const CONNECT_TIMEOUT = 60_000;

interface UserPageOptions {
  /**
   * Open it in a separate Chromium whose UDP traffic `setNetworkLoss` degrades (dev/netloss:
   * needs root). Its media flows suffer; signalling (TCP) does not.
   */
  lossy?: boolean;
  /**
   * Open it in a separate Chromium whose media capture is refused as if the person had pressed
   * Block (`denied`), that has a microphone but no camera at all (`no-camera`), or whose
   * microphone hears a steady tone instead of short beeps (`talking`).
   */
  media?: "denied" | "no-camera" | "talking";
  /**
   * Every peer connection of the page gathers TURN relay candidates only (ICE transport policy
   * "relay"), as behind a firewall that lets nothing but the TURN server through: its media runs
   * through the stack's coturn. `window.__koinosPeerConnections` lists them.
   */
  turnOnly?: boolean;
}

/**
 * A WAV of a steady tone, written once per run: Chromium's fake microphone only beeps briefly
 * each second, too little for LiveKit's speaker detection, so a "talking" browser plays this.
 */
function toneFile(): string {
  const path = join(tmpdir(), "koinos-e2e-tone.wav");
  if (existsSync(path)) return path;
  const rate = 48_000;
  const samples = rate * 2;
  const wav = Buffer.alloc(44 + samples * 2);
  wav.write("RIFF", 0);
  wav.writeUInt32LE(36 + samples * 2, 4);
  wav.write("WAVEfmt ", 8);
  wav.writeUInt32LE(16, 16);
  wav.writeUInt16LE(1, 20); // PCM
  wav.writeUInt16LE(1, 22); // mono
  wav.writeUInt32LE(rate, 24);
  wav.writeUInt32LE(rate * 2, 28);
  wav.writeUInt16LE(2, 32);
  wav.writeUInt16LE(16, 34);
  wav.write("data", 36);
  wav.writeUInt32LE(samples * 2, 40);
  // 440 Hz at half scale (about -9 dBFS): well above LiveKit's speaking threshold.
  for (let i = 0; i < samples; i++) wav.writeInt16LE(Math.round(16_000 * Math.sin((2 * Math.PI * 440 * i) / rate)), 44 + i * 2);
  writeFileSync(path, wav);
  return path;
}

/** Chromium's own switches for `UserPageOptions.media`, replacing the defaults of the same name. */
const MEDIA_SWITCHES: Record<NonNullable<UserPageOptions["media"]>, () => string[]> = {
  denied: () => ["--use-fake-ui-for-media-stream=deny"],
  "no-camera": () => ["--use-fake-device-for-media-stream=device-count=0"],
  talking: () => [`--use-file-for-fake-audio-capture=${toneFile()}`],
};

function withSwitches(args: readonly string[] | undefined, overrides: string[]): string[] {
  const names = new Set(overrides.map((a) => a.split("=")[0]));
  return [...(args ?? []).filter((a) => !names.has(a.split("=")[0])), ...overrides];
}

interface Fixtures {
  /** A page in a fresh, independent browser context (own storage, own fake devices). */
  openUserPage: (label: string, options?: UserPageOptions) => Promise<Page>;
}

const DEV_DIR = fileURLToPath(new URL("../../dev/", import.meta.url));

/** Drops `percent` % of the lossy browser's UDP packets in each direction (0 stops it). */
export function setNetworkLoss(percent: number): void {
  const args = percent > 0 ? ["set", String(percent)] : ["clear"];
  execFileSync(`${DEV_DIR}netloss`, args, { stdio: "inherit" });
}

const MAX_LOG_LINES = 3000;

export const test = base.extend<Fixtures>({
  openUserPage: async ({ browser, playwright, launchOptions, baseURL }, use, testInfo) => {
    const contexts: BrowserContext[] = [];
    let lossyBrowser: Browser | undefined;
    const ownBrowsers = new Map<string, Browser>();
    const logs = new Map<string, string[]>();
    const push = (label: string, line: string): void => {
      const list = logs.get(label) ?? [];
      list.push(`${new Date().toISOString()} ${line}`);
      if (list.length > MAX_LOG_LINES) list.splice(0, list.length - MAX_LOG_LINES);
      logs.set(label, list);
    };

    await use(async (label: string, options?: UserPageOptions) => {
      let owner: Browser = browser;
      if (options?.lossy) {
        lossyBrowser ??= await playwright.chromium.launch({ ...launchOptions, executablePath: `${DEV_DIR}lossy-chromium` });
        owner = lossyBrowser;
      } else if (options?.media) {
        const media = options.media;
        let own = ownBrowsers.get(media);
        if (!own) {
          own = await playwright.chromium.launch({ ...launchOptions, args: withSwitches(launchOptions.args, MEDIA_SWITCHES[media]()) });
          ownBrowsers.set(media, own);
        }
        owner = own;
      }
      const context = await owner.newContext({
        ...(baseURL ? { baseURL } : {}),
        // A granted permission would skip the (fake) prompt that refuses.
        permissions: options?.media === "denied" ? [] : ["camera", "microphone"],
        viewport: { width: 1280, height: 800 },
      });
      contexts.push(context);
      // Every page of every test runs under control's Content-Security-Policy: what it blocks
      // is recorded (and fails the test at the end), so that a policy that breaks the page,
      // livekit-client's worker or matrix-js-sdk is caught wherever it shows.
      await context.addInitScript(() => {
        const w = window as unknown as { __cspViolations: string[] };
        w.__cspViolations = [];
        document.addEventListener("securitypolicyviolation", (e) => {
          w.__cspViolations.push(`${e.effectiveDirective} blocked ${e.blockedURI || "(inline)"}`);
        });
      });
      if (options?.turnOnly) await relayOnly(context);
      const page = await context.newPage();
      page.on("console", (msg) => push(label, `[console.${msg.type()}] ${msg.text()}`));
      page.on("pageerror", (err) => push(label, `[pageerror] ${err.stack ?? err.message}`));
      page.on("requestfailed", (req) => push(label, `[requestfailed] ${req.method()} ${req.url()} ${req.failure()?.errorText ?? ""}`));
      page.on("response", (res) => {
        if (res.status() >= 400) push(label, `[http ${res.status()}] ${res.request().method()} ${res.url()}`);
      });
      return page;
    });

    const violations: string[] = [];
    for (const context of contexts) {
      for (const page of context.pages()) {
        const seen = await page
          .evaluate(() => (window as unknown as { __cspViolations?: string[] }).__cspViolations ?? [])
          .catch(() => [] as string[]);
        violations.push(...seen.map((v) => `${page.url()}: ${v}`));
      }
    }
    // Leave calls politely before closing, so memberships do not linger for the next run.
    for (const context of contexts) {
      for (const page of context.pages()) {
        await page
          .evaluate(() => {
            window.dispatchEvent(new Event("pagehide"));
          })
          .catch(() => undefined);
      }
    }
    await new Promise((r) => setTimeout(r, 500));
    for (const context of contexts) await context.close().catch(() => undefined);
    for (const own of ownBrowsers.values()) await own.close().catch(() => undefined);
    if (lossyBrowser) {
      await lossyBrowser.close().catch(() => undefined);
      setNetworkLoss(0);
    }

    if (violations.length > 0 && testInfo.status === testInfo.expectedStatus) {
      throw new Error(`Content-Security-Policy violations:\n${violations.join("\n")}`);
    }
    if (testInfo.status !== testInfo.expectedStatus) {
      for (const [label, lines] of logs) {
        const body = lines.join("\n");
        await testInfo.attach(`browser-console-${label}.txt`, { body, contentType: "text/plain" });
        // Also straight into the test output: the tail is what usually matters.
        console.log(`\n===== browser console (${label}), last 200 lines =====\n${lines.slice(-200).join("\n")}`);
      }
    }
  },
});

export { expect };

/** Signs in through the login form and waits for the case list. Returns the Matrix user id. */
export async function signIn(page: Page, username: string, password = DEMO_PASSWORD): Promise<string> {
  await page.goto("/");
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("button", { name: "Sign out" })).toBeVisible({ timeout: 30_000 });
  const whoami = page.getByTestId("whoami");
  await expect(whoami).toHaveText(/^@/);
  return (await whoami.textContent())?.trim() ?? "";
}

/**
 * Clicks Start/Join call (`button`, either by default) in the open case and "Join now" in the
 * lobby, with the lobby's defaults (microphone and camera on). Does not wait for the call.
 */
export async function enterCall(page: Page, button: string | RegExp = /^(Start call|Join call)$/): Promise<void> {
  await page.getByRole("button", { name: button }).click();
  await page.getByTestId("lobby").getByRole("button", { name: "Join now" }).click();
}

/** Signs `user` in, opens the demo case and clicks Start/Join call: the lobby is showing. */
export async function openLobby(page: Page, user: string): Promise<void> {
  await signIn(page, user);
  await openCase(page, DEMO_CASE);
  await page.getByRole("button", { name: /^(Start call|Join call)$/ }).click();
  await expect(page.getByTestId("lobby")).toBeVisible();
}

/** Enters the call in the open case (`enterCall`) and waits until LiveKit is connected. */
export async function joinCall(page: Page): Promise<void> {
  await enterCall(page);
  await expect
    .poll(() => page.evaluate(() => window.__koinosRoom?.state ?? "none"), { timeout: CONNECT_TIMEOUT })
    .toBe("connected");
}

/** Signs `user` in on `page`, opens the demo case and joins its call. Returns the Matrix user id. */
export async function joinDemoCall(page: Page, user: string): Promise<string> {
  const userId = await signIn(page, user);
  await openCase(page, DEMO_CASE);
  await joinCall(page);
  return userId;
}

/**
 * Hands this page `ws://localhost:<port>` as its LiveKit URL instead of the one control answers
 * (the dev stack's gateway): another gateway instance, a balancer in front of one.
 */
export async function pointLiveKitUrlAt(page: Page, port: number): Promise<void> {
  await page.route("**/api/rtc/token", async (route) => {
    const response = await route.fetch();
    const body = (await response.json()) as { url: string };
    await route.fulfill({ response, json: { ...body, url: `ws://localhost:${port}` } });
  });
}

/**
 * alice, bob and carol join the demo call, alice and bob at the stack's gateway, carol at
 * localhost:`carolPort` (a `Balancer` in front of gateway instances).
 */
export async function threeWithCarolAt(openUserPage: (label: string) => Promise<Page>, carolPort: number): Promise<[Page, Page, Page]> {
  const pages: Page[] = [];
  for (const user of ["alice", "bob", "carol"]) {
    const page = await openUserPage(user);
    // carol's page is handed the balancer's address as the LiveKit URL.
    if (user === "carol") await pointLiveKitUrlAt(page, carolPort);
    await joinDemoCall(page, user);
    pages.push(page);
  }
  return pages as [Page, Page, Page];
}

/**
 * Waits until this page receives `remotes` cameras, settled at `lines` (after bandwidth ramp-up):
 * every one exactly that high, or with `highest`, none higher and the highest exactly that. The
 * latter is for calls of five or six browsers on two cores, where Chromium's encoder may scale a
 * starved publisher's layer down (e.g. 360 → 270) for everyone: below the cap, not a cap at work.
 */
export async function videoSettlesAt(page: Page, remotes: number, lines: number, mode: "every" | "highest" = "every"): Promise<void> {
  const settled = (heights: number[]): boolean =>
    heights.length === remotes &&
    (mode === "every" ? heights.every((h) => h === lines) : heights.every((h) => h <= lines) && Math.max(...heights) === lines);
  await expect
    .poll(async () => {
      const heights = await inboundVideoHeights(page);
      return settled(heights) ? "settled" : heights;
    }, { timeout: 90_000, intervals: [1000] })
    .toBe("settled");
}

export async function openCase(page: Page, name = DEMO_CASE): Promise<void> {
  const entry = page.getByTestId("case_entry").filter({ hasText: new RegExp(`^${escapeRegExp(name)}$`) }).first();
  await expect(entry).toBeVisible({ timeout: 30_000 });
  await entry.click();
  await expect(page.getByTestId("case_name")).toHaveText(name);
  // The panel knows whether a call is running once the initial membership calculation ran.
  await expect(page.getByRole("button", { name: /^(Start call|Join call)$/ })).toBeVisible();
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

export interface RemoteMediaSummary {
  remotes: number;
  identities: string[];
  subscribedAudio: number;
  subscribedVideo: number;
}

/** What the page's LiveKit room (test hook window.__koinosRoom) has subscribed. */
export async function remoteMedia(page: Page): Promise<RemoteMediaSummary | null> {
  return page.evaluate(() => {
    const room = window.__koinosRoom;
    if (!room) return null;
    let subscribedAudio = 0;
    let subscribedVideo = 0;
    const identities: string[] = [];
    for (const p of room.remoteParticipants.values()) {
      identities.push(p.identity);
      for (const pub of p.trackPublications.values()) {
        if (!pub.isSubscribed || !pub.track) continue;
        const kind: string = pub.kind;
        if (kind === "audio") subscribedAudio++;
        if (kind === "video") subscribedVideo++;
      }
    }
    return { remotes: room.remoteParticipants.size, identities, subscribedAudio, subscribedVideo };
  });
}

export interface InboundCounters {
  framesDecoded: number;
  audioBytesReceived: number;
}

/** Sums inbound-rtp framesDecoded (video) and bytesReceived (audio) over the remote tracks. */
export async function inboundCounters(page: Page): Promise<InboundCounters> {
  return page.evaluate(async () => {
    const room = window.__koinosRoom;
    let framesDecoded = 0;
    let audioBytesReceived = 0;
    if (!room) return { framesDecoded, audioBytesReceived };
    for (const p of room.remoteParticipants.values()) {
      for (const pub of p.trackPublications.values()) {
        const track = pub.track;
        if (!pub.isSubscribed || !track) continue;
        const report = await track.getRTCStatsReport();
        report?.forEach((stat: { type?: string; kind?: string; framesDecoded?: number; bytesReceived?: number }) => {
          if (stat.type !== "inbound-rtp") return;
          if (stat.kind === "video") framesDecoded += stat.framesDecoded ?? 0;
          if (stat.kind === "audio") audioBytesReceived += stat.bytesReceived ?? 0;
        });
      }
    }
    return { framesDecoded, audioBytesReceived };
  });
}

/** Remote video frames and audio bytes this page receives keep growing. */
export async function expectMediaFlowing(page: Page, who: string): Promise<void> {
  await expect(async () => {
    const before = await inboundCounters(page);
    await page.waitForTimeout(2_000);
    const after = await inboundCounters(page);
    expect(after.framesDecoded, `${who}: remote video framesDecoded should increase`).toBeGreaterThan(before.framesDecoded);
    expect(after.audioBytesReceived, `${who}: remote audio bytesReceived should increase`).toBeGreaterThan(
      before.audioBytesReceived,
    );
  }).toPass({ timeout: 30_000, intervals: [500] });
}

export const HOMESERVER_URL = process.env.KOINOS_HS_URL ?? "http://localhost:8008";
const CALL_MEMBER = "org.matrix.msc3401.call.member";

/** The case room id shown in the page's URL (`#/case/<roomId>`). */
export function roomIdOf(page: Page): string {
  const encoded = /#\/case\/([^/?]+)/.exec(page.url())?.[1];
  if (!encoded) throw new Error(`not on a case page: ${page.url()}`);
  return decodeURIComponent(encoded);
}

export interface StateEvent {
  type: string;
  state_key: string;
  sender: string;
  origin_server_ts: number;
  content: Record<string, unknown>;
}

/** A fresh access token for `user` (device E2ECHECK), for reading and writing as them. */
export async function accessTokenOf(user: string): Promise<string> {
  const login = await fetch(`${HOMESERVER_URL}/_matrix/client/v3/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      type: "m.login.password",
      identifier: { type: "m.id.user", user },
      password: DEMO_PASSWORD,
      device_id: "E2ECHECK",
    }),
  });
  const { access_token: token } = (await login.json()) as { access_token: string };
  return token;
}

/** The room's current state, read straight from the homeserver with a fresh login as `user`. */
export async function roomState(roomId: string, user = "alice"): Promise<StateEvent[]> {
  const token = await accessTokenOf(user);
  const response = await fetch(`${HOMESERVER_URL}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  if (!response.ok) throw new Error(`room state: HTTP ${response.status}`);
  return (await response.json()) as StateEvent[];
}

/**
 * Call memberships in the room's current state that still claim a live call (non-empty content
 * not yet expired), read from the homeserver — not through the page.
 */
export async function liveCallMemberships(roomId: string, user = "alice"): Promise<string[]> {
  return (await roomState(roomId, user))
    .filter((e) => e.type === CALL_MEMBER && e.content.application !== undefined)
    .filter((e) => {
      const created = typeof e.content.created_ts === "number" ? e.content.created_ts : e.origin_server_ts;
      const expires = typeof e.content.expires === "number" ? e.content.expires : 4 * 3600_000;
      return created + expires > Date.now();
    })
    .map((e) => e.state_key);
}

/** Frame height of every remote camera video this page receives now (getStats inbound-rtp). */
export async function inboundVideoHeights(page: Page): Promise<number[]> {
  return page.evaluate(async () => {
    const room = window.__koinosRoom;
    const heights: number[] = [];
    if (!room) return heights;
    for (const p of room.remoteParticipants.values()) {
      for (const pub of p.trackPublications.values()) {
        const track = pub.track;
        const kind: string = pub.kind;
        const source: string = pub.source;
        if (!pub.isSubscribed || !track || kind !== "video" || source !== "camera") continue;
        const report = await track.getRTCStatsReport();
        report?.forEach((stat: { type?: string; kind?: string; frameHeight?: number }) => {
          if (stat.type === "inbound-rtp" && stat.kind === "video" && stat.frameHeight) heights.push(stat.frameHeight);
        });
      }
    }
    return heights;
  });
}

/**
 * Frame height of the camera video this page receives from `user` (the part of the Matrix id
 * before the colon), or 0 while none is decoded.
 */
export async function inboundVideoHeightFrom(page: Page, user: string): Promise<number> {
  return page.evaluate(async (prefix) => {
    const room = window.__koinosRoom;
    if (!room) return 0;
    for (const p of room.remoteParticipants.values()) {
      if (!p.identity.startsWith(prefix)) continue;
      const camera = [...p.trackPublications.values()].find((pub) => {
        const source: string = pub.source;
        return source === "camera" && pub.isSubscribed;
      });
      const report = await camera?.track?.getRTCStatsReport();
      let height = 0;
      report?.forEach((stat: { type?: string; kind?: string; frameHeight?: number }) => {
        if (stat.type === "inbound-rtp" && stat.kind === "video" && stat.frameHeight) height = stat.frameHeight;
      });
      return height;
    }
    return 0;
  }, `@${user}:`);
}

/** A gateway metric summed over all its label sets (0 when absent), from the instance on `port`. */
export async function gatewayMetric(name: string, port = Number(process.env.KOINOS_GATEWAY_PORT ?? 7880)): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const [key, value] = line.split(" ");
    if (key === name || key?.startsWith(`${name}{`)) sum += Number(value ?? 0);
  }
  return sum;
}

/** Whether `viewer` sees `user`'s track of this source muted (null: no such publication). */
export async function mutedFor(viewer: Page, user: string, source: "microphone" | "camera"): Promise<boolean | null> {
  return viewer.evaluate(
    ({ prefix, source }) => {
      for (const p of window.__koinosRoom?.remoteParticipants.values() ?? []) {
        if (!p.identity.startsWith(prefix)) continue;
        for (const pub of p.trackPublications.values()) {
          const s: string = pub.source;
          if (s === source) return pub.isMuted;
        }
      }
      return null;
    },
    { prefix: `@${user}:`, source },
  );
}

/** The device id behind this page's published microphone or camera track. */
export async function publishedDevice(page: Page, source: "microphone" | "camera"): Promise<{ deviceId: string; trackId: string }> {
  return page.evaluate((source) => {
    for (const pub of window.__koinosRoom?.localParticipant.trackPublications.values() ?? []) {
      const s: string = pub.source;
      const track = pub.track?.mediaStreamTrack;
      if (s === source && track) return { deviceId: track.getSettings().deviceId ?? "", trackId: track.id };
    }
    return { deviceId: "", trackId: "" };
  }, source);
}

/**
 * A TCP load balancer for a test, in front of gateway instances: new connections go to the
 * instance chosen now (`target`), or, when nothing accepts there (a killed instance), to the
 * `fallback` as a load balancer's passive health check would; `cut` drops the live ones, and
 * while `refusing` new ones are accepted and dropped at once, as when the network between
 * browser and server is down.
 */
export class Balancer {
  private readonly server: net.Server;
  private readonly live = new Set<net.Socket>();
  refusing = false;
  /** Connections that found `target` dead and went to `fallback`. */
  failedOver = 0;
  constructor(
    public target: number,
    public fallback?: number,
  ) {
    this.server = net.createServer((client) => {
      if (this.refusing) {
        client.destroy();
        return;
      }
      this.live.add(client);
      client.on("close", () => this.live.delete(client));
      client.on("error", () => undefined);
      const ports = this.fallback === undefined ? [this.target] : [this.target, this.fallback];
      this.pass(client, ports);
    });
  }

  private pass(client: net.Socket, ports: number[]): void {
    const [port, ...rest] = ports;
    if (port === undefined) {
      client.destroy();
      return;
    }
    const upstream = net.connect(port, "127.0.0.1");
    let connected = false;
    upstream.on("error", () => {
      if (!connected && rest.length > 0) {
        this.failedOver++;
        this.pass(client, rest);
      } else client.destroy();
    });
    upstream.once("connect", () => {
      connected = true;
      this.live.add(upstream);
      upstream.on("close", () => this.live.delete(upstream));
      client.pipe(upstream).pipe(client);
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => client.destroy());
    });
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    return (this.server.address() as net.AddressInfo).port;
  }

  /** The instance behind it goes away for its connections (as when a pod is drained). */
  cut(): void {
    for (const socket of this.live) socket.destroy();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

export interface TileLayout {
  /** Camera and screen tiles on the page. */
  tiles: number;
  /** Distinct columns and rows the camera tiles sit in. */
  columns: number;
  rows: number;
  /** Problems found: overlapping tiles, tiles or controls outside the window, a sideways scroll. */
  problems: string[];
}

/**
 * How the call view is laid out in this page's window: the grid of tiles, and whether anything
 * a practitioner needs is out of reach (outside the window's width, overlapping, too small to tap).
 */
export async function tileLayout(page: Page): Promise<TileLayout> {
  return page.evaluate(() => {
    const problems: string[] = [];
    const width = window.innerWidth;
    if (document.documentElement.scrollWidth > width) problems.push(`page scrolls sideways (${document.documentElement.scrollWidth} > ${width})`);
    const tiles = [...document.querySelectorAll<HTMLElement>('[data-testid="tile"], [data-testid="screen_tile"]')];
    const boxes = tiles.map((t) => ({ id: `${t.dataset.testid}:${t.dataset.identity}`, r: t.getBoundingClientRect(), el: t }));
    for (const { id, r, el } of boxes) {
      if (r.left < 0 || r.right > width + 0.5) problems.push(`${id} outside the window (${r.left}…${r.right})`);
      if (r.width < 120) problems.push(`${id} is only ${r.width}px wide`);
      const caption = el.querySelector("figcaption")?.getBoundingClientRect();
      if (caption && (caption.left < r.left || caption.right > r.right + 0.5)) problems.push(`${id}'s name overflows its tile`);
    }
    boxes.forEach((a, i) => {
      for (const b of boxes.slice(i + 1)) {
        if (a.r.left < b.r.right - 1 && b.r.left < a.r.right - 1 && a.r.top < b.r.bottom - 1 && b.r.top < a.r.bottom - 1) {
          problems.push(`${a.id} overlaps ${b.id}`);
        }
      }
    });
    for (const button of document.querySelectorAll<HTMLElement>('[role="toolbar"] button')) {
      const r = button.getBoundingClientRect();
      const name = button.getAttribute("aria-label") ?? button.textContent ?? "";
      if (r.left < 0 || r.right > width + 0.5) problems.push(`button "${name}" outside the window`);
      if (r.height < 40) problems.push(`button "${name}" is only ${r.height}px tall`);
    }
    const cameras = boxes.filter((b) => b.el.dataset.testid === "tile").map((b) => b.r);
    const distinct = (values: number[]): number => new Set(values.map((v) => Math.round(v))).size;
    return { tiles: boxes.length, columns: distinct(cameras.map((r) => r.left)), rows: distinct(cameras.map((r) => r.top)), problems };
  });
}

/** The LiveKit room a ticket (or LiveKit token) names: its `video.room` claim. */
export function livekitRoomOf(jwt: string): string {
  const payload = JSON.parse(Buffer.from(jwt.split(".")[1] ?? "", "base64url").toString("utf8")) as { video?: { room?: string } };
  if (!payload.video?.room) throw new Error("the token names no LiveKit room");
  return payload.video.room;
}

/**
 * Deletes a LiveKit room with LiveKit's own RoomService and the dev stack's API key, as LiveKit
 * itself closes an empty room after its departure timeout (nobody ends the call).
 */
export async function deleteLiveKitRoom(room: string): Promise<void> {
  const devDir = process.env.KOINOS_DEV_DIR ?? fileURLToPath(new URL("../../.dev/", import.meta.url));
  const keys = /^keys:\n\s+([A-Za-z0-9_-]+):\s*"([^"]+)"/m.exec(readFileSync(join(devDir, "livekit.yaml"), "utf8"));
  if (!keys?.[1] || !keys[2]) throw new Error("no API key in the dev stack's livekit.yaml");
  const b64 = (value: object): string => Buffer.from(JSON.stringify(value)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const unsigned = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ iss: keys[1], nbf: now - 5, exp: now + 60, video: { roomCreate: true } })}`;
  const token = `${unsigned}.${createHmac("sha256", keys[2]).update(unsigned).digest("base64url")}`;
  const response = await fetch("http://127.0.0.1:7881/twirp/livekit.RoomService/DeleteRoom", {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ room }),
  });
  if (!response.ok) throw new Error(`LiveKit DeleteRoom: ${response.status} ${await response.text()}`);
}

/** Asks control to end the case's call (`POST /api/rtc/end`) as `user`, proving who with an OpenID token. */
export async function endCallAs(user: string, roomId: string): Promise<{ status: number; errcode?: string }> {
  const token = await accessTokenOf(user);
  const whoami = (await (await fetch(`${HOMESERVER_URL}/_matrix/client/v3/account/whoami`, { headers: { Authorization: `Bearer ${token}` } })).json()) as {
    user_id: string;
  };
  const openid: unknown = await (
    await fetch(`${HOMESERVER_URL}/_matrix/client/v3/user/${encodeURIComponent(whoami.user_id)}/openid/request_token`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: "{}",
    })
  ).json();
  const control = process.env.KOINOS_WEB_URL ?? "http://localhost:8080";
  const response = await fetch(`${control}/api/rtc/end`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ room_id: roomId, openid_token: openid }),
  });
  const body = (await response.json().catch(() => ({}))) as { errcode?: string };
  return { status: response.status, ...(body.errcode ? { errcode: body.errcode } : {}) };
}

/** supervisorctl on the dev stack (`dev/stack ctl`): restart, signal, stop, start, pid; its output. */
export function stackCtl(...args: string[]): string {
  return execFileSync(`${DEV_DIR}stack`, ["ctl", ...args], { encoding: "utf8" }).trim();
}

/** `dev/stack ctl …` without waiting for it (a restart takes as long as the component's stop). */
export function stackCtlInBackground(...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(`${DEV_DIR}stack`, ["ctl", ...args], { encoding: "utf8" }, (err, stdout) => {
      if (err) reject(new Error(`dev/stack ctl ${args.join(" ")}: ${err.message}`));
      else resolve(stdout.trim());
    });
  });
}

/**
 * Does `fault` to a supervised dev-stack component (a restart by default) and waits until its
 * next process accepts connections on `port`, then until the fault's own command has returned;
 * when the fault began and when the port accepted (ms since the epoch). The old process's end is what is watched, not a refused connection:
 * coturn's restart closes its port for a few milliseconds only, less than any poll interval.
 */
export async function replacedAndAccepting(
  program: string,
  port: number,
  fault: () => Promise<string> = () => stackCtlInBackground("restart", program),
): Promise<{ faultAt: number; upAt: number }> {
  const oldPid = stackCtl("pid", program);
  if (!/^[1-9][0-9]*$/.test(oldPid)) throw new Error(`${program} is not running (pid: ${oldPid})`);
  const faultAt = Date.now();
  const done = fault();
  await expect.poll(() => existsSync(`/proc/${oldPid}`), { timeout: 60_000, intervals: [20] }).toBe(false);
  await expect.poll(() => accepts(port), { timeout: 60_000, intervals: [50] }).toBe(true);
  const upAt = Date.now();
  await done;
  return { faultAt, upAt };
}

/**
 * A gateway of the test's own, like the stack's first one (its binary and configuration) but on
 * a free port: a process the test may kill with no supervisor starting it again.
 */
export class OwnGateway {
  private constructor(
    readonly port: number,
    private readonly child: ChildProcess,
  ) {}

  static async start(): Promise<OwnGateway> {
    const pid = stackCtl("pid", "gateway");
    // Its command line names the binary by path: /proc/PID/exe would be "… (deleted)" once a
    // later build replaced the file (as `cargo test` does while the stack runs).
    const args = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter((a) => a !== "");
    const [exe] = args;
    const config = args[args.indexOf("--config") + 1];
    if (!exe || !config) throw new Error(`no binary or --config in the stack gateway's command line: ${args.join(" ")}`);
    const port = await new Promise<number>((resolve) => {
      const probe = net.createServer().listen(0, "127.0.0.1", () => {
        const free = (probe.address() as net.AddressInfo).port;
        probe.close(() => resolve(free));
      });
    });
    const child = spawn(exe, ["--config", config], {
      env: { ...process.env, KOINOS_GATEWAY_LISTEN: `127.0.0.1:${port}` },
      stdio: "ignore",
    });
    const gateway = new OwnGateway(port, child);
    // Ready: caught up with control's revocations.
    await expect
      .poll(async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.status, { timeout: 30_000 })
      .toBe(200);
    return gateway;
  }

  /** SIGKILL, as a crash or a lost node. */
  kill(): void {
    this.child.kill("SIGKILL");
  }
}

/** Every peer connection of the context's pages uses TURN relay candidates only (listed). */
async function relayOnly(context: BrowserContext): Promise<void> {
  await context.addInitScript(() => {
    const w = window as unknown as { __koinosPeerConnections?: RTCPeerConnection[]; RTCPeerConnection: typeof RTCPeerConnection };
    const list: RTCPeerConnection[] = [];
    w.__koinosPeerConnections = list;
    // livekit-client sets the configuration again once LiveKit names its ICE servers.
    const proto = w.RTCPeerConnection.prototype;
    const setConfiguration = Object.getOwnPropertyDescriptor(proto, "setConfiguration")?.value as (
      this: RTCPeerConnection,
      config?: RTCConfiguration,
    ) => void;
    proto.setConfiguration = function (this: RTCPeerConnection, config?: RTCConfiguration) {
      setConfiguration.call(this, { ...config, iceTransportPolicy: "relay" });
    };
    w.RTCPeerConnection = new Proxy(w.RTCPeerConnection, {
      construct(target, args, newTarget) {
        const config = { ...((args[0] as RTCConfiguration | undefined) ?? {}), iceTransportPolicy: "relay" as const };
        const pc = Reflect.construct(target, [config, ...(args.slice(1) as unknown[])], newTarget) as RTCPeerConnection;
        list.push(pc);
        return pc;
      },
    });
  });
}

/**
 * The local candidate type ("relay", "host", ...) of the pair each open peer connection of the
 * page (`turnOnly`) sends its media over now; empty while none is selected.
 */
export async function selectedCandidateTypes(page: Page): Promise<string[]> {
  return page.evaluate(async () => {
    const pcs = (window as unknown as { __koinosPeerConnections?: RTCPeerConnection[] }).__koinosPeerConnections ?? [];
    const types: string[] = [];
    for (const pc of pcs) {
      if (pc.connectionState !== "connected") continue;
      const stats = await pc.getStats();
      let pairId: string | undefined;
      stats.forEach((s: { type: string; selectedCandidatePairId?: string }) => {
        if (s.type === "transport" && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
      });
      const pair = pairId ? (stats.get(pairId) as { localCandidateId?: string } | undefined) : undefined;
      const local = pair?.localCandidateId ? (stats.get(pair.localCandidateId) as { candidateType?: string } | undefined) : undefined;
      if (local?.candidateType) types.push(local.candidateType);
    }
    return types;
  });
}

/**
 * Runs `body` with a gateway of the test's own behind a balancer that sends connections to the
 * stack's first gateway once that one is dead (as a load balancer's health check would): the
 * test kills `doomed` to see signalling move. Both are gone afterwards.
 */
export async function withDoomedGateway(body: (doomed: OwnGateway, balancer: Balancer, balancerPort: number) => Promise<void>): Promise<void> {
  const doomed = await OwnGateway.start();
  const balancer = new Balancer(doomed.port, Number(process.env.KOINOS_GATEWAY_PORT ?? 7880));
  const balancerPort = await balancer.listen();
  try {
    await body(doomed, balancer, balancerPort);
  } finally {
    doomed.kill();
    await balancer.close();
  }
}

/** Whether something accepts TCP connections on localhost:`port` now. */
export function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.setTimeout(500);
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("timeout", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", () => resolve(false));
  });
}

/** Call memberships in the room's state with when each was last sent (a re-send is churn). */
export async function callMembershipEvents(roomId: string): Promise<Record<string, number>> {
  const live = new Set(await liveCallMemberships(roomId));
  const events: Record<string, number> = {};
  for (const e of await roomState(roomId)) {
    if (e.type === CALL_MEMBER && live.has(e.state_key)) events[e.state_key] = e.origin_server_ts;
  }
  return events;
}

/**
 * Milliseconds from `since` (now by default) until remote video frames and audio bytes grow on
 * every one of `pages` (each sampled twice, half a second apart), polled until `withinMs` after
 * `since`; throws if they do not.
 */
export async function untilMediaFlowsOnAll(pages: Page[], withinMs: number, since = Date.now()): Promise<number> {
  const start = since;
  const flowing = new Set<Page>();
  while (Date.now() - start < withinMs) {
    const before = await Promise.all(pages.map((p) => inboundCounters(p).catch(() => null)));
    await pages[0]?.waitForTimeout(500);
    const after = await Promise.all(pages.map((p) => inboundCounters(p).catch(() => null)));
    pages.forEach((page, i) => {
      const [b, a] = [before[i], after[i]];
      if (b && a && a.framesDecoded > b.framesDecoded && a.audioBytesReceived > b.audioBytesReceived) flowing.add(page);
      else flowing.delete(page);
    });
    if (flowing.size === pages.length) return Date.now() - start - 500;
  }
  throw new Error(`media did not flow again on every page within ${withinMs} ms`);
}
