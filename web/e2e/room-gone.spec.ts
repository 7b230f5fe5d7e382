import { CONNECT_TIMEOUT, DEMO_PASSWORD, enterCall, HOMESERVER_URL, expect, openCase, roomIdOf, signIn, test } from "./fixtures";

/** Ends the case's call through control (deletes the LiveKit room), as alice, the host. */
async function endCallAsHost(roomId: string): Promise<void> {
  const login = (await (
    await fetch(`${HOMESERVER_URL}/_matrix/client/v3/login`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ type: "m.login.password", identifier: { type: "m.id.user", user: "alice" }, password: DEMO_PASSWORD }),
    })
  ).json()) as { access_token: string; user_id: string };
  const openid: unknown = await (
    await fetch(`${HOMESERVER_URL}/_matrix/client/v3/user/${encodeURIComponent(login.user_id)}/openid/request_token`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${login.access_token}` },
      body: "{}",
    })
  ).json();
  const control = process.env.KOINOS_WEB_URL ?? "http://localhost:8080";
  const response = await fetch(`${control}/api/rtc/end`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ room_id: roomId, openid_token: openid }),
  });
  expect(response.status).toBe(200);
}

/**
 * LiveKit closes an empty call's room after its departure timeout; a token issued at that
 * instant names a room that is gone. The page must recover by asking for a new token (which
 * re-creates the room) instead of failing the join.
 */
test("joining recovers when the call's media room vanished after the token was issued", async ({ openUserPage }) => {
  const page = await openUserPage("alice");
  await signIn(page, "alice");
  await openCase(page);
  const roomId = roomIdOf(page);

  let tokenRequests = 0;
  await page.route("**/api/rtc/token", async (route) => {
    tokenRequests += 1;
    const response = await route.fetch();
    // The first token is real, but its room is deleted before the page can use it.
    if (tokenRequests === 1) await endCallAsHost(roomId);
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
