import { expect, joinDemoCall, test } from "./fixtures";

/**
 * What each tile tells: the person's Matrix display name, whether they are speaking (LiveKit's
 * active-speaker detection, fed a steady tone), and how good their connection is.
 */
test("tiles show display names, who is speaking, and each connection's quality", async ({ openUserPage }) => {
  const alice = await openUserPage("alice", { media: "talking" });
  const aliceId = await joinDemoCall(alice, "alice");
  const bob = await openUserPage("bob");
  await joinDemoCall(bob, "bob");
  const aliceOnBob = bob.locator('[data-testid="tile"][data-local="false"]');
  await expect(aliceOnBob).toHaveCount(1, { timeout: 60_000 });

  // Her display name from the case room, not her Matrix id or device.
  const displayName = await alice.evaluate(
    (userId) => document.querySelector('[data-testid="tile"][data-local="true"] .tile-name')?.textContent?.replace(/ \(you\)$/, "") ?? userId,
    aliceId,
  );
  expect(displayName).not.toMatch(/^@/);
  await expect(aliceOnBob.locator(".tile-name")).toHaveText(displayName);

  // Her microphone's tone makes her the speaker, for bob and on her own tile.
  await expect(aliceOnBob).toHaveAttribute("data-speaking", "true", { timeout: 30_000 });
  await expect(aliceOnBob.getByRole("img", { name: "Speaking" })).toBeVisible();
  await expect(alice.locator('[data-testid="tile"][data-local="true"]')).toHaveAttribute("data-speaking", "true", { timeout: 30_000 });
  // Muted, she is not speaking any more, and stays so.
  await alice.getByRole("button", { name: "Mute microphone" }).click();
  await expect(aliceOnBob).toHaveAttribute("data-speaking", "false", { timeout: 15_000 });
  for (let i = 0; i < 5; i++) {
    await bob.waitForTimeout(1_000);
    await expect(aliceOnBob).toHaveAttribute("data-speaking", "false", { timeout: 100 });
  }

  // LiveKit scores every connection within seconds and tells each participant its own score:
  // the local tile on both pages says how it is. A remote tile shows the score once LiveKit
  // sends it, which it does only on a tick where someone is new or changed, to those then
  // subscribed (livekit-server pkg/rtc/room.go, connectionQualityWorker): it may stay
  // "unknown" on a quiet call, by LiveKit's design; fallback.spec.ts shows a remote score
  // arriving when it changes.
  for (const page of [alice, bob]) {
    const indicators = page.getByTestId("tile_quality");
    await expect(indicators).toHaveCount(2);
    const local = page.locator('[data-testid="tile"][data-local="true"] [data-testid="tile_quality"]');
    await expect(local).toHaveAttribute("data-quality", /^(excellent|good)$/, { timeout: 30_000 });
    await expect(local).toHaveAccessibleName(/^Connection (excellent|good)$/);
    const remote = page.locator('[data-testid="tile"][data-local="false"] [data-testid="tile_quality"]');
    await expect(remote).toHaveAttribute("data-quality", /^(excellent|good|unknown)$/);
  }
});
