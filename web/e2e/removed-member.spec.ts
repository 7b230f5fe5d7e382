import { accessTokenOf, expect, joinDemoCall, postAsUser as asUser, remoteMedia, roomIdOf, test } from "./fixtures";

test("a member removed from the case room while in the call is dropped from the call and told", async ({ openUserPage }) => {
  const alice = await openUserPage("alice");
  await joinDemoCall(alice, "alice");
  const bob = await openUserPage("bob");
  const bobId = await joinDemoCall(bob, "bob");
  await expect.poll(async () => (await remoteMedia(alice))?.remotes).toBe(1);

  const roomId = roomIdOf(alice);
  const aliceToken = await accessTokenOf("alice");
  const room = encodeURIComponent(roomId);
  try {
    // The host removes bob from the case (as a clinic would when he leaves the team).
    await asUser(aliceToken, `/rooms/${room}/kick`, { user_id: bobId, reason: "e2e: removed from the case" });
    await expect.poll(() => bob.evaluate(() => window.__koinosRoom?.state ?? "gone"), { timeout: 10_000, intervals: [200] }).toBe("gone");
    await expect.poll(async () => (await remoteMedia(alice))?.remotes, { timeout: 10_000 }).toBe(0);
    await expect(bob.getByRole("alert")).toHaveText("You were removed from this case by alice, so you are no longer in its call.");
  } finally {
    // Put "Demo case" back as it was for the other tests.
    await asUser(aliceToken, `/rooms/${room}/invite`, { user_id: bobId }).catch(() => undefined);
    await asUser(await accessTokenOf("bob"), `/join/${room}`, {});
  }
  // No ghost: bob could not clear his own call membership once removed, so control did, at once
  // (not after the ghost grace). Back in the case but not in the call, he is not listed in it.
  await alice.getByRole("button", { name: "Leave call" }).click();
  await expect(alice.getByRole("button", { name: "Start call" })).toBeVisible({ timeout: 15_000 });
});
