import type { Page } from "@playwright/test";
import { expect, joinDemoCall, test } from "./fixtures";

/** Frames decoded of the screen share `viewer` receives from `identity` (null: none subscribed). */
async function screenFramesFrom(viewer: Page, identity: string): Promise<number | null> {
  return viewer.evaluate(async (id) => {
    const p = window.__koinosRoom?.remoteParticipants.get(id);
    const pub = p ? [...p.trackPublications.values()].find((t) => (t.source as string) === "screen_share") : undefined;
    if (!pub?.isSubscribed || !pub.track) return null;
    let frames = 0;
    (await pub.track.getRTCStatsReport())?.forEach((stat: { type?: string; framesDecoded?: number }) => {
      if (stat.type === "inbound-rtp") frames += stat.framesDecoded ?? 0;
    });
    return frames;
  }, identity);
}

test("a screen share reaches the others as its own tile and goes away when stopped", async ({ openUserPage }) => {
  const alice = await openUserPage("alice");
  await joinDemoCall(alice, "alice");
  const bob = await openUserPage("bob");
  await joinDemoCall(bob, "bob");
  const aliceIdentity = await alice.evaluate(() => window.__koinosRoom?.localParticipant.identity ?? "");

  const share = alice.getByRole("button", { name: "Share your screen" });
  await expect(share).toHaveAttribute("data-testid", "toggle_screen_share");
  await share.click();
  await expect(alice.getByRole("button", { name: "Stop sharing your screen" })).toBeVisible();
  await expect(alice.getByTestId("screen_tile")).toHaveAttribute("data-local", "true");

  // bob receives it as a separate track and tile, and its frames are decoded.
  const tile = bob.locator(`[data-testid="screen_tile"][data-identity="${aliceIdentity}"]`);
  await expect(tile).toBeVisible();
  await expect(tile).toContainText("'s screen");
  await expect.poll(() => screenFramesFrom(bob, aliceIdentity), { timeout: 30_000 }).toBeGreaterThan(0);
  // Her camera keeps coming too: two video tiles from alice for bob.
  await expect(bob.locator(`[data-testid="tile"][data-identity="${aliceIdentity}"] video:not(.hidden)`)).toHaveCount(1);

  await alice.getByRole("button", { name: "Stop sharing your screen" }).click();
  await expect(alice.getByRole("button", { name: "Share your screen" })).toBeVisible();
  await expect(tile).toHaveCount(0, { timeout: 15_000 });
  await expect.poll(() => screenFramesFrom(bob, aliceIdentity), { timeout: 15_000 }).toBeNull();
});
