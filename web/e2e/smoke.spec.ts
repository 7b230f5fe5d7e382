import type { Page } from "@playwright/test";
import {
  CONNECT_TIMEOUT,
  DEMO_CASE,
  enterCall,
  expect,
  expectMediaFlowing,
  liveCallMemberships,
  openCase,
  remoteMedia,
  roomIdOf,
  signIn,
  test,
} from "./fixtures";

/**
 * Seed smoke (issue #16): two practitioners in the same case start / join a call and exchange
 * media. Needs the dev stack (`make up`): control at :8080, Synapse at :8008, gateway, LiveKit.
 */

/** Leftovers from earlier runs are fine as long as this user is not shown in the call. */
async function expectNotListedInCall(page: Page, userId: string): Promise<void> {
  await expect(page.locator(`[data-testid="call_participant"][data-user-id="${userId}"]`)).toHaveCount(0, {
    timeout: CONNECT_TIMEOUT,
  });
}

async function waitConnected(page: Page): Promise<void> {
  await expect
    .poll(() => page.evaluate(() => window.__koinosRoom?.state ?? "none"), { timeout: CONNECT_TIMEOUT })
    .toBe("connected");
}

async function expectOneRemoteWithMedia(page: Page): Promise<string> {
  await expect
    .poll(() => remoteMedia(page), { timeout: CONNECT_TIMEOUT, intervals: [500, 1000] })
    .toMatchObject({ remotes: 1, subscribedAudio: 1, subscribedVideo: 1 });
  const summary = await remoteMedia(page);
  return summary?.identities[0] ?? "";
}

test("two practitioners start and join a call in a case and exchange media", async ({ openUserPage }) => {
  const alice = await openUserPage("alice");
  const bob = await openUserPage("bob");

  const aliceId = await signIn(alice, "alice");
  const bobId = await signIn(bob, "bob");

  await openCase(alice, DEMO_CASE);
  await openCase(bob, DEMO_CASE);
  await expectNotListedInCall(alice, aliceId);
  await expectNotListedInCall(bob, bobId);

  // Alice starts the call (or joins a stranger's leftover call, which is not hers).
  await enterCall(alice);
  await expect(alice.getByTestId("call_view")).toBeVisible();
  await waitConnected(alice);
  await expect(alice.locator('[data-testid="tile"][data-local="true"]')).toBeVisible({ timeout: CONNECT_TIMEOUT });
  await expect(alice.locator('[data-testid="tile"][data-local="true"]')).toHaveAttribute(
    "data-identity",
    new RegExp(`^${aliceId.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:`),
  );

  // Bob's case view shows the running call with Alice in it.
  await expect(bob.getByTestId("call_panel")).toHaveAttribute("data-running", "true", { timeout: CONNECT_TIMEOUT });
  await expect(bob.locator(`[data-testid="call_participant"][data-user-id="${aliceId}"]`)).toBeVisible();
  await enterCall(bob, "Join call");
  await waitConnected(bob);

  // Each side: exactly one remote participant, with one subscribed audio and one video track.
  const aliceSeesIdentity = await expectOneRemoteWithMedia(alice);
  const bobSeesIdentity = await expectOneRemoteWithMedia(bob);
  expect(aliceSeesIdentity.startsWith(`${bobId}:`)).toBe(true);
  expect(bobSeesIdentity.startsWith(`${aliceId}:`)).toBe(true);
  await expect(alice.locator(`[data-testid="tile"][data-identity="${aliceSeesIdentity}"]`)).toBeVisible();
  await expect(bob.locator(`[data-testid="tile"][data-identity="${bobSeesIdentity}"]`)).toBeVisible();
  await expect(alice.getByTestId("tile")).toHaveCount(2);
  await expect(bob.getByTestId("tile")).toHaveCount(2);

  // Media flows both ways.
  await expectMediaFlowing(alice, "alice");
  await expectMediaFlowing(bob, "bob");

  // Both leave; Alice's case view then shows no running call.
  await alice.getByRole("button", { name: "Leave call" }).click();
  await expect(alice.getByTestId("call_view")).toHaveCount(0, { timeout: 30_000 });
  expect(await alice.evaluate(() => window.__koinosRoom === undefined)).toBe(true);
  await bob.getByRole("button", { name: "Leave call" }).click();
  await expect(bob.getByTestId("call_view")).toHaveCount(0, { timeout: 30_000 });
  expect(await bob.evaluate(() => window.__koinosRoom === undefined)).toBe(true);

  await expect(alice.getByRole("button", { name: "Start call" })).toBeVisible({ timeout: CONNECT_TIMEOUT });
  await expect(alice.getByTestId("call_participants")).toHaveCount(0);

  // And the room itself holds no live call membership of theirs (read from the homeserver).
  const roomId = roomIdOf(alice);
  await expect
    .poll(async () => (await liveCallMemberships(roomId)).filter((key) => key.includes(aliceId) || key.includes(bobId)), {
      timeout: 30_000,
    })
    .toEqual([]);
});
