import type { Page } from "@playwright/test";
import type { RemoteTrackPublication } from "livekit-client";
import { ENCRYPTED_CASE, enterCall, expect, inboundVideoHeightFrom, inboundVideoHeights, joinDemoCall, openCase, signIn, test, tileLayout, videoSettlesAt } from "./fixtures";

/**
 * The quality ladder is enforced by the gateway, per subscriber, with no help from the page
 * (which sends no track settings: adaptiveStream is off). Publishers send 360/540/720 layers.
 * A 720p stream starts low while bandwidth ramps up, so heights are read once they settle.
 */

declare global {
  interface Window {
    /** The interval of `askFor`'s repeated requests. */
    __koinosAsking?: number;
  }
}

test("each subscriber gets 540 lines in a 3-person call, also after a resume, and 720 again when it shrinks to 2", async ({ openUserPage }) => {
  test.setTimeout(300_000);
  const pages: Page[] = [];
  for (const user of ["erin", "frank", "carol"]) {
    const page = await openUserPage(user);
    await joinDemoCall(page, user);
    pages.push(page);
  }
  const [erin, frank, carol] = pages as [Page, Page, Page];

  for (const page of pages) await videoSettlesAt(page, 2, 540);
  // And it stays there: never above the cap while the call has three people.
  for (let i = 0; i < 5; i++) {
    for (const page of pages) {
      for (const height of await inboundVideoHeights(page)) expect(height).toBeLessThanOrEqual(540);
    }
    await erin.waitForTimeout(1000);
  }

  // A signalling resume (the client drops its WebSocket and resumes through the gateway, which
  // sees a fresh session): the cap holds.
  const resumed = erin.evaluate(
    () =>
      new Promise<void>((resolve) => {
        const room = window.__koinosRoom;
        room?.once("reconnected", () => resolve());
        void room?.simulateScenario("signal-reconnect");
      }),
  );
  await resumed;
  for (let i = 0; i < 10; i++) {
    for (const height of await inboundVideoHeights(erin)) expect(height).toBeLessThanOrEqual(540);
    await erin.waitForTimeout(1000);
  }
  await videoSettlesAt(erin, 2, 540);

  await carol.getByRole("button", { name: "Leave call" }).click();
  await expect(carol.getByTestId("call_view")).toHaveCount(0, { timeout: 30_000 });
  await videoSettlesAt(erin, 1, 720);
  await videoSettlesAt(frank, 1, 720);
});

/** Leaves the call from the page's own button and waits until the call view is gone. */
async function leave(page: Page): Promise<void> {
  await page.getByRole("button", { name: "Leave call" }).click();
  await expect(page.getByTestId("call_view")).toHaveCount(0, { timeout: 30_000 });
}

/**
 * Republishes the page's camera the way a stock livekit-client does (Element Call among them):
 * default simulcast layers, 180 and 360 under the 720 capture. So there is a 180 layer to ask for,
 * and no 540 one.
 */
async function republishWithStockLayers(page: Page): Promise<void> {
  await page.evaluate(async () => {
    const room = window.__koinosRoom;
    if (!room) throw new Error("not in a call");
    const local = room.localParticipant;
    for (const pub of local.trackPublications.values()) {
      const source: string = pub.source;
      if (source === "camera" && pub.track) await local.unpublishTrack(pub.track, true);
    }
    await local.setCameraEnabled(
      true,
      { resolution: { width: 1280, height: 720, frameRate: 30 } },
      { simulcast: true, videoSimulcastLayers: undefined },
    );
  });
}

/** The layer heights `user`'s camera is published with, as this page's room sees them. */
async function publishedLayers(page: Page, user: string): Promise<number[]> {
  return page.evaluate((prefix) => {
    for (const p of window.__koinosRoom?.remoteParticipants.values() ?? []) {
      if (!p.identity.startsWith(prefix)) continue;
      for (const pub of p.trackPublications.values()) {
        const source: string = pub.source;
        if (source === "camera") return (pub.trackInfo?.layers ?? []).map((l) => l.height).sort((a, b) => a - b);
      }
    }
    return [];
  }, `@${user}:`);
}

/**
 * Makes the page ask LiveKit for `user`'s camera at width×height, the way an app with its own
 * layout would (an UpdateTrackSettings per call). With `everyMs`, it keeps asking, alternating
 * between two sizes a few lines apart so that livekit-client does not skip identical requests;
 * `stopAsking` ends it.
 */
async function askFor(page: Page, user: string, width: number, height: number, everyMs?: number): Promise<void> {
  await page.evaluate(
    ({ prefix, width, height, everyMs }) => {
      const camera = (): RemoteTrackPublication | undefined => {
        for (const p of window.__koinosRoom?.remoteParticipants.values() ?? []) {
          if (!p.identity.startsWith(prefix)) continue;
          for (const pub of p.trackPublications.values()) {
            const source: string = pub.source;
            if (source === "camera") return pub;
          }
        }
        return undefined;
      };
      camera()?.setVideoDimensions({ width, height });
      if (everyMs) {
        let flip = false;
        window.__koinosAsking = window.setInterval(() => {
          flip = !flip;
          camera()?.setVideoDimensions({ width, height: flip ? height + 8 : height });
        }, everyMs);
      }
    },
    { prefix: `@${user}:`, width, height, everyMs },
  );
}

async function stopAsking(page: Page): Promise<void> {
  await page.evaluate(() => window.clearInterval(window.__koinosAsking));
}

test("6, 5, 4 and 2 people: at most 360 lines, then 540, then 720; a 7th is told the call is full; a client asking for 1080 still gets 360 and one asking for 180 gets 180", async ({ openUserPage }) => {
  test.setTimeout(600_000);
  const users = ["alice", "bob", "carol", "dave", "erin", "frank"] as const;
  const pages = new Map<string, Page>();
  // In the encrypted case: the gateway sees only RTP headers and signalling of an end-to-end
  // encrypted call, and holds the ladder all the same (the 3-person test runs unencrypted).
  for (const user of users) {
    const page = await openUserPage(user);
    await joinDemoCall(page, user, ENCRYPTED_CASE);
    pages.set(user, page);
  }
  const page = (user: (typeof users)[number]): Page => pages.get(user) as Page;
  for (const p of pages.values()) expect(await p.evaluate(() => window.__koinosRoom?.isE2EEEnabled)).toBe(true);

  // Six: everybody receives the five other cameras at 360, and never more.
  for (const p of pages.values()) await videoSettlesAt(p, 5, 360, "highest");
  for (let i = 0; i < 5; i++) {
    for (const p of pages.values()) {
      for (const height of await inboundVideoHeights(p)) expect(height).toBeLessThanOrEqual(360);
    }
    await page("alice").waitForTimeout(1000);
  }
  // Six tiles fit the window: three by two on the 1280×800 screen, two by three at phone width.
  await expect.poll(() => tileLayout(page("frank"))).toEqual({ tiles: 6, columns: 3, rows: 2, problems: [] });
  await expect(page("frank").getByTestId("tiles")).toBeInViewport({ ratio: 1 });
  await page("frank").setViewportSize({ width: 390, height: 844 });
  await expect.poll(() => tileLayout(page("frank"))).toEqual({ tiles: 6, columns: 2, rows: 3, problems: [] });
  await page("frank").setViewportSize({ width: 1280, height: 800 });

  // A seventh participant (the demo has six practitioners, so alice on a second device) is told
  // the call is full, by control's real refusal, and is not counted in the call.
  const seventh = await openUserPage("alice-second-device");
  await signIn(seventh, "alice");
  await openCase(seventh, ENCRYPTED_CASE);
  await enterCall(seventh, "Join call");
  await expect(seventh.getByTestId("call_error")).toHaveText("This call is full (6 participants).", { timeout: 60_000 });
  expect(await seventh.evaluate(() => window.__koinosRoom === undefined)).toBe(true);
  await expect(seventh.getByRole("button", { name: "Join call" })).toBeVisible();
  for (const p of pages.values()) expect(await inboundVideoHeights(p)).toHaveLength(5);

  // Five, with erin publishing livekit-client's default layers (180/360/720). alice keeps asking
  // for her at 1080p and gets the 360 layer (LiveKit alone would send 720: no layer reaches 1080,
  // so the SFU takes the top); bob asks for 180 and gets exactly that.
  await leave(page("frank"));
  pages.delete("frank");
  await page("erin").waitForFunction(() => window.__koinosRoom?.localParticipant.isCameraEnabled === true);
  await republishWithStockLayers(page("erin"));
  for (const user of ["alice", "bob"] as const) {
    await expect.poll(() => publishedLayers(page(user), "erin"), { timeout: 60_000 }).toEqual([180, 360, 720]);
    // Asked before the subscription has its track, livekit-client drops the dimensions.
    await expect.poll(() => inboundVideoHeightFrom(page(user), "erin"), { timeout: 60_000 }).toBeGreaterThan(0);
  }
  await askFor(page("alice"), "erin", 1920, 1080, 250);
  await askFor(page("bob"), "erin", 320, 180);
  await expect.poll(() => inboundVideoHeightFrom(page("alice"), "erin"), { timeout: 90_000, intervals: [1000] }).toBe(360);
  await expect.poll(() => inboundVideoHeightFrom(page("bob"), "erin"), { timeout: 90_000, intervals: [1000] }).toBe(180);
  for (let i = 0; i < 10; i++) {
    expect(await inboundVideoHeightFrom(page("alice"), "erin")).toBeLessThanOrEqual(360);
    expect(await inboundVideoHeightFrom(page("bob"), "erin")).toBe(180);
    await page("alice").waitForTimeout(1000);
  }
  await stopAsking(page("alice"));
  for (const user of ["carol", "dave"] as const) await videoSettlesAt(page(user), 4, 360, "highest");

  // Four: the cap rises to 540 for everyone still there.
  await leave(page("erin"));
  pages.delete("erin");
  for (const p of pages.values()) await videoSettlesAt(p, 3, 540);

  // Two: 720.
  await leave(page("carol"));
  await leave(page("dave"));
  await videoSettlesAt(page("alice"), 1, 720);
  await videoSettlesAt(page("bob"), 1, 720);
});
