import { CONNECT_TIMEOUT, deleteLiveKitRoom, enterCall, expect, livekitRoomOf, openCase, signIn, test } from "./fixtures";

/**
 * LiveKit closes an empty call's room after its departure timeout; a token issued at that
 * instant names a room that is gone. The page must recover by asking for a new token (which
 * re-creates the room) instead of failing the join.
 */
test("joining recovers when the call's media room vanished after the token was issued", async ({ openUserPage }) => {
  const page = await openUserPage("alice");
  await signIn(page, "alice");
  await openCase(page);

  let tokenRequests = 0;
  await page.route("**/api/rtc/token", async (route) => {
    tokenRequests += 1;
    const response = await route.fetch();
    // The first ticket is real, but LiveKit closes its room before the page can use it (as
    // it closes an empty room: nobody ended the call).
    if (tokenRequests === 1) await deleteLiveKitRoom(livekitRoomOf(((await response.json()) as { jwt: string }).jwt));
    await route.fulfill({ response });
  });

  await enterCall(page);
  await expect
    .poll(() => page.evaluate(() => window.__koinosRoom?.state ?? "none"), { timeout: CONNECT_TIMEOUT })
    .toBe("connected");
  expect(tokenRequests).toBe(2);
  await page.getByRole("button", { name: "Leave call" }).click();
  await expect(page.getByRole("button", { name: "Start call" })).toBeVisible({ timeout: 30_000 });
});
