import type { Frame, Page } from "@playwright/test";
import {
  DEMO_CASE,
  DEMO_PASSWORD,
  ENCRYPTED_CASE,
  expect,
  expectMediaFlowing as expectPageMediaFlowing,
  gatewayMetric,
  HOMESERVER_URL,
  joinCall,
  liveCallMemberships,
  openCase,
  roomState,
  setDisplayName,
  signIn,
  test,
} from "./fixtures";
import type { EcHostSession, EcHostState } from "./element-call/host";
import {
  buildHost,
  ELEMENT_CALL_URL,
  elementCallFrame,
  elementCallVersion,
  HOST_URL,
  inboundMedia,
  ORIGIN,
  serveElementCall,
  trackPeerConnections,
} from "./element-call/support";

/**
 * Stock Element Call (npm @element-hq/element-call-embedded, unmodified) in widget mode, hosted
 * by a minimal Matrix client (e2e/element-call/host.ts: matrix-js-sdk + matrix-widget-api, like
 * Element Web), against the real stack: Synapse for Matrix, our control plane as its
 * lk-jwt-service (found through Synapse's MSC4143 transports), our gateway as its LiveKit URL.
 */

const GATEWAY_WS = process.env.KOINOS_GATEWAY_WS ?? "ws://localhost:7880";
const LIVEKIT_DIRECT_PORT = ":7881";

interface Socket {
  url: string;
  framesReceived: number;
  closed: boolean;
}

interface Participant {
  page: Page;
  session: EcHostSession;
  /** Every WebSocket the page (host or Element Call) opened. */
  sockets: Socket[];
  frame: () => Frame;
}

/** LiveKit signalling sockets (`/rtc`, `/rtc/v1`), wherever they went. */
function livekitSockets(p: Participant): Socket[] {
  return p.sockets.filter((s) => /\/rtc(\/v1)?(\?|$)/.test(s.url));
}

async function joinWithElementCall(
  openUserPage: (label: string) => Promise<Page>,
  user: string,
  intent: "start_call" | "join_existing",
  roomName = DEMO_CASE,
): Promise<Participant> {
  const page = await openUserPage(user);
  // Pages that Playwright serves have no address of their own, so Chromium's Local Network
  // Access treats them as public and blocks their requests to loopback (Synapse, control, the
  // gateway) unless the permission is granted, as a person would when Chromium asks.
  await page.context().grantPermissions(["camera", "microphone", "local-network-access"], { origin: ORIGIN });
  await serveElementCall(page.context());
  await trackPeerConnections(page.context());
  const sockets: Socket[] = [];
  page.on("websocket", (ws) => {
    // Without the query: LiveKit's carries the access token.
    const socket: Socket = { url: ws.url().split("?")[0] ?? "", framesReceived: 0, closed: false };
    sockets.push(socket);
    ws.on("framereceived", () => socket.framesReceived++);
    ws.on("close", () => {
      socket.closed = true;
    });
  });
  await page.goto(HOST_URL);
  await expect.poll(() => page.evaluate(() => window.__ecHost !== undefined)).toBe(true);
  const session = await page.evaluate(
    (options) => {
      const host = window.__ecHost;
      if (!host) throw new Error("widget host not loaded");
      return host.start(options);
    },
    {
      homeserverUrl: HOMESERVER_URL,
      user,
      password: DEMO_PASSWORD,
      roomName,
      intent,
      elementCallUrl: ELEMENT_CALL_URL,
    },
  );
  const frame = (): Frame => {
    const f = elementCallFrame(page);
    if (!f) throw new Error(`${user}: no Element Call frame`);
    return f;
  };
  return { page, session, sockets, frame };
}

function hostState(page: Page): Promise<EcHostState> {
  return page.evaluate(() => {
    const host = window.__ecHost;
    if (!host) throw new Error("widget host not loaded");
    return host.state();
  });
}

function stateKeyOf(session: EcHostSession): string {
  return `_${session.userId}_${session.deviceId}_m.call`;
}

/** Resolves once inbound video frames and audio bytes are both still growing. */
async function expectMediaFlowing(p: Participant, label: string): Promise<void> {
  await expect
    .poll(async () => (await inboundMedia(p.frame())).framesDecoded, { message: `${label} decodes video`, timeout: 90_000, intervals: [1000] })
    .toBeGreaterThan(0);
  const before = await inboundMedia(p.frame());
  await expect
    .poll(
      async () => {
        const now = await inboundMedia(p.frame());
        return now.framesDecoded > before.framesDecoded + 10 && now.audioBytesReceived > before.audioBytesReceived;
      },
      { message: `${label} keeps receiving video and audio`, timeout: 30_000, intervals: [1000] },
    )
    .toBe(true);
}

test.describe("stock Element Call through the gateway", () => {
  test.beforeAll(async () => {
    test.setTimeout(180_000);
    await buildHost();
  });

  test(`Element Call ${elementCallVersion()} (widget mode): two people join, see and hear each other, and leave`, async ({ openUserPage }) => {
    test.setTimeout(420_000);
    const settingsBefore = await gatewayMetric("koinos_gateway_track_settings_total");

    const alice = await joinWithElementCall(openUserPage, "alice", "start_call");
    // Element Call tells its host when it has joined (io.element.join) and publishes its
    // MatrixRTC membership through the widget API.
    await expect
      .poll(async () => (await hostState(alice.page)).actions, { message: "alice's Element Call joins", timeout: 120_000, intervals: [1000] })
      .toContain("io.element.join");
    await expect
      .poll(() => liveCallMemberships(alice.session.roomId), { message: "alice's membership is published", timeout: 60_000 })
      .toContain(stateKeyOf(alice.session));

    const bob = await joinWithElementCall(openUserPage, "bob", "join_existing");
    await expect
      .poll(async () => (await hostState(bob.page)).actions, { message: "bob's Element Call joins", timeout: 120_000, intervals: [1000] })
      .toContain("io.element.join");
    await expect
      .poll(() => liveCallMemberships(bob.session.roomId), { message: "bob's membership is published", timeout: 60_000 })
      .toContain(stateKeyOf(bob.session));

    // Element Call found our control plane as its MatrixRTC transport (Synapse's MSC4143
    // transports, asked for through the widget API) and advertises it in its membership.
    const state = await roomState(alice.session.roomId);
    for (const p of [alice, bob]) {
      const membership = state.find((e) => e.type === "org.matrix.msc3401.call.member" && e.state_key === stateKeyOf(p.session));
      expect(membership?.content.foci_preferred, `${p.session.userId}'s membership`).toEqual([
        expect.objectContaining({ type: "livekit", livekit_service_url: `${ORIGIN}/api/rtc` }),
      ]);
    }

    // Each receives the other's camera and microphone.
    await expectMediaFlowing(alice, "alice");
    await expectMediaFlowing(bob, "bob");

    // Signalling went through the gateway: each Element Call opened its LiveKit WebSockets to
    // the URL control handed out (the gateway; LiveKit itself listens on another port) and got
    // LiveKit's answers back through it, and the gateway applied its ladder to their
    // subscriptions.
    for (const [name, p] of [["alice", alice], ["bob", bob]] as const) {
      const livekit = livekitSockets(p);
      expect(livekit.length, `${name}'s WebSockets: ${p.sockets.map((s) => s.url).join(", ")}`).toBeGreaterThan(0);
      for (const socket of livekit) expect(socket.url.startsWith(`${GATEWAY_WS}/`), socket.url).toBe(true);
      expect(p.sockets.filter((s) => s.url.includes(LIVEKIT_DIRECT_PORT))).toEqual([]);
      expect(livekit.some((s) => !s.closed && s.framesReceived > 0), `${name} has a live LiveKit session through the gateway`).toBe(true);
    }
    expect(await gatewayMetric("koinos_gateway_sessions")).toBeGreaterThanOrEqual(2);
    expect(await gatewayMetric("koinos_gateway_track_settings_total")).toBeGreaterThan(settingsBefore);

    // The gateway's 2-person cap: what each receives is at most 720 lines high.
    for (const p of [alice, bob]) {
      await expect.poll(async () => (await inboundMedia(p.frame())).videoHeights.length, { timeout: 30_000 }).toBeGreaterThan(0);
      for (let i = 0; i < 5; i++) {
        for (const height of (await inboundMedia(p.frame())).videoHeights) expect(height).toBeLessThanOrEqual(720);
        await p.page.waitForTimeout(1000);
      }
    }

    // Both hang up with Element Call's own button. Element Call 0.26 leaves the MatrixRTC
    // session, disconnects from LiveKit and then asks its host to close it (io.element.close;
    // im.vector.hangup is only sent for a hang-up that keeps the widget open).
    for (const p of [bob, alice]) {
      await p.frame().getByTestId("incall_leave").click();
      await expect
        .poll(async () => (await hostState(p.page)).closed, { message: `${p.session.userId}'s Element Call leaves and closes`, timeout: 60_000 })
        .toBe(true);
    }
    for (const p of [alice, bob]) {
      await expect
        .poll(() => liveCallMemberships(p.session.roomId), { message: `${p.session.userId}'s membership is cleared`, timeout: 60_000 })
        .not.toContain(stateKeyOf(p.session));
    }
    // And their signalling sessions through the gateway are over.
    for (const p of [alice, bob]) {
      await expect
        .poll(() => livekitSockets(p).filter((s) => !s.closed).length, { message: `${p.session.userId}'s LiveKit sockets close`, timeout: 30_000 })
        .toBe(0);
    }

    // What each Element Call asked of its host, for the record; none of it may have failed.
    for (const [name, p] of [["alice", alice], ["bob", bob]] as const) {
      const state = await hostState(p.page);
      await test.info().attach(`widget-host-${name}.json`, { body: JSON.stringify({ session: p.session, sockets: p.sockets, ...state }, null, 2), contentType: "application/json" });
      expect(state.errors).toEqual([]);
      await p.page.evaluate(() => window.__ecHost?.close());
    }
  });

  test(`Element Call ${elementCallVersion()} and this page in one call: each sees and hears the other, and the page names the Element Call participant`, async ({ openUserPage }) => {
    test.setTimeout(300_000);
    // A display name unlike her user name and unlike the name in her LiveKit token (control
    // puts the localpart there), so the tile shows which of them the page chose.
    const aliceWas = await setDisplayName("alice", "Dr Alice Martin");
    try {
      await elementCallAndThisPage(openUserPage, DEMO_CASE);
    } finally {
      await setDisplayName("alice", aliceWas);
    }
  });

  test(`Element Call ${elementCallVersion()} and this page in an encrypted case: each decrypts and decodes the other's media`, async ({ openUserPage }) => {
    test.setTimeout(300_000);
    // Element Call encrypts with per-participant keys because the room is encrypted, its keys
    // going through the widget host's Olm; the page does the same with its own.
    const aliceWas = await setDisplayName("alice", "Dr Alice Martin");
    try {
      await elementCallAndThisPage(openUserPage, ENCRYPTED_CASE, async (bob) => {
        await expect(bob.getByTestId("e2ee_badge")).toBeVisible();
        await expect
          .poll(() =>
            bob.evaluate(() =>
              [...(window.__koinosRoom?.remoteParticipants.values() ?? [])].flatMap((p) =>
                [...p.trackPublications.values()].filter((pub) => pub.isSubscribed).map((pub) => pub.isEncrypted),
              ),
            ),
          )
          .toEqual([true, true]);
      });
    } finally {
      await setDisplayName("alice", aliceWas);
    }
  });
});

async function elementCallAndThisPage(
  openUserPage: (label: string) => Promise<Page>,
  caseName: string,
  whileInCall: (bob: Page) => Promise<void> = () => Promise.resolve(),
): Promise<void> {
  const alice = await joinWithElementCall(openUserPage, "alice", "start_call", caseName);
  await expect
    .poll(async () => (await hostState(alice.page)).actions, { message: "alice's Element Call joins", timeout: 120_000, intervals: [1000] })
    .toContain("io.element.join");
  const bob = await openUserPage("bob");
  await signIn(bob, "bob");
  await openCase(bob, caseName);
  await joinCall(bob);

  // One LiveKit room for both clients (MSC4195's room name). The page names her by the user
  // attribute control put in her token (whatever identity her Element Call asked for: 0.26
  // gets `<user>:<device>`, later ones MSC4195's hash; participantIdentity.test.ts), with her
  // display name in the case.
  const aliceOnBob = bob.locator('[data-testid="tile"][data-local="false"]');
  await expect(aliceOnBob).toHaveCount(1, { timeout: 60_000 });
  await expect(aliceOnBob.locator(".tile-name")).toHaveText("Dr Alice Martin");

  // Each receives the other's camera and microphone.
  await expectPageMediaFlowing(bob, "bob, on this page");
  await expectMediaFlowing(alice, "alice, in Element Call");
  await whileInCall(bob);

  await bob.getByRole("button", { name: "Leave call" }).click();
  await alice.frame().getByTestId("incall_leave").click();
  await expect
    .poll(async () => (await hostState(alice.page)).closed, { message: "alice's Element Call leaves and closes", timeout: 60_000 })
    .toBe(true);
  await expect
    .poll(() => liveCallMemberships(alice.session.roomId), { message: "alice's membership is cleared", timeout: 60_000 })
    .not.toContain(stateKeyOf(alice.session));
  expect((await hostState(alice.page)).errors).toEqual([]);
  await alice.page.evaluate(() => window.__ecHost?.close());
}
