import { execFileSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test as base, expect, type Browser, type BrowserContext, type Page } from "@playwright/test";
import { CONNECT_TIMEOUT, DEMO_CASE, DEMO_PASSWORD, DEV_DIR } from "./support/env";
import { inboundVideoHeights } from "./support/media";

export { CONNECT_TIMEOUT, DEMO_CASE, DEMO_PASSWORD, ENCRYPTED_CASE } from "./support/env";
export * from "./support/matrix";
export * from "./support/media";
export * from "./support/stack";

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

/** Signs `user` in on `page`, opens the demo case (or `caseName`) and joins its call. Returns the Matrix user id. */
export async function joinDemoCall(page: Page, user: string, caseName = DEMO_CASE): Promise<string> {
  const userId = await signIn(page, user);
  await openCase(page, caseName);
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
