import { CONNECT_TIMEOUT, DEMO_CASE, endCallAs, expect, joinCall, liveCallMemberships, openCase, roomIdOf, signIn, test } from "./fixtures";

test("the host ends the call for everyone; others have no End button and are told", async ({ openUserPage }) => {
  // alice created "Demo case" (a host); bob is a member with the default power level.
  const alice = await openUserPage("alice");
  const bob = await openUserPage("bob");
  const aliceId = await signIn(alice, "alice");
  const bobId = await signIn(bob, "bob");
  await openCase(alice, DEMO_CASE);
  await openCase(bob, DEMO_CASE);
  await joinCall(alice);
  await joinCall(bob);

  await expect(alice.getByRole("button", { name: "End call for all" })).toBeVisible();
  await expect(bob.getByTestId("call_view")).toBeVisible();
  await expect(bob.getByRole("button", { name: "End call for all" })).toHaveCount(0);
  // Nor may he end it through the API: control refuses, and the call goes on for both.
  const roomId = roomIdOf(alice);
  expect(await endCallAs("bob", roomId)).toEqual({ status: 403, errcode: "M_FORBIDDEN" });
  await alice.waitForTimeout(2_000);
  for (const p of [alice, bob]) expect(await p.evaluate(() => window.__koinosRoom?.state)).toBe("connected");

  alice.once("dialog", (dialog) => void dialog.accept());
  await alice.getByRole("button", { name: "End call for all" }).click();

  // bob is out of the call and told why; alice is back on the case view.
  await expect(bob.getByTestId("call_status")).toHaveText("The host ended the call.", { timeout: 30_000 });
  await expect.poll(() => bob.evaluate(() => window.__koinosRoom === undefined)).toBe(true);
  await expect(alice.getByTestId("call_view")).toHaveCount(0, { timeout: 30_000 });

  // The case room holds no live call membership of either (read from the homeserver).
  await expect
    .poll(async () => (await liveCallMemberships(roomId)).filter((key) => key.includes(aliceId) || key.includes(bobId)), {
      timeout: 30_000,
    })
    .toEqual([]);
  await expect(alice.getByRole("button", { name: "Start call" })).toBeVisible({ timeout: CONNECT_TIMEOUT });
});
