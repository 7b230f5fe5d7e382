import type { Page } from "@playwright/test";
import { expect, inboundCounters, joinDemoCall, test } from "./fixtures";

declare global {
  interface Window {
    /** ICE servers of every RTCPeerConnection the page created (init script below). */
    __koinosIceServers?: RTCIceServer[][];
  }
}

/** Records the ICE servers each RTCPeerConnection is created with; the browser's own class otherwise. */
async function recordIceServers(page: Page): Promise<void> {
  await page.addInitScript(() => {
    const seen: RTCIceServer[][] = [];
    window.__koinosIceServers = seen;
    window.RTCPeerConnection = new Proxy(window.RTCPeerConnection, {
      construct(target, args: [RTCConfiguration?], newTarget) {
        seen.push(args[0]?.iceServers ?? []);
        return Reflect.construct(target, args, newTarget) as RTCPeerConnection;
      },
    });
  });
}

async function mediaFlows(page: Page): Promise<void> {
  const before = await inboundCounters(page);
  await expect
    .poll(
      async () => {
        const now = await inboundCounters(page);
        return now.framesDecoded > before.framesDecoded && now.audioBytesReceived > before.audioBytesReceived;
      },
      { timeout: 30_000 },
    )
    .toBe(true);
}

test("the page sets up its media with TURN credentials from control, and still joins when control cannot give any", async ({ openUserPage }) => {
  const alice = await openUserPage("alice");
  await recordIceServers(alice);
  const turnAnswers: number[] = [];
  alice.on("response", (r) => {
    if (r.url().endsWith("/api/rtc/turn")) turnAnswers.push(r.status());
  });
  await joinDemoCall(alice, "alice");
  expect(turnAnswers).toEqual([200]);
  // Every peer connection LiveKit opened uses our coturn with alice's time-limited credentials.
  const configs = await alice.evaluate(() => window.__koinosIceServers ?? []);
  expect(configs.length).toBeGreaterThan(0);
  for (const servers of configs) {
    expect(servers).toEqual([
      expect.objectContaining({
        urls: ["turn:localhost:3478?transport=udp", "turn:localhost:3478?transport=tcp"],
        username: expect.stringMatching(/^\d+:@alice:localhost$/),
      }),
    ]);
  }

  // bob's control cannot issue TURN credentials (as if coturn's secret were missing): he joins
  // with LiveKit's own ICE servers, and the two exchange media.
  const bob = await openUserPage("bob");
  await bob.route("**/api/rtc/turn", (route) =>
    route.fulfill({ status: 503, json: { errcode: "M_UNAVAILABLE", error: "The service is temporarily unavailable; try again shortly." } }),
  );
  await joinDemoCall(bob, "bob");
  await mediaFlows(alice);
  await mediaFlows(bob);
});
