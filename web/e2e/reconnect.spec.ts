import type { Page } from "@playwright/test";
import { Balancer, CONNECT_TIMEOUT, expect, expectMediaFlowing, joinDemoCall, liveCallMemberships, pointLiveKitUrlAt, roomIdOf, test } from "./fixtures";

/**
 * A flaky network between the practitioner and the server: livekit-client's own reconnection is
 * shown, not hidden. alice's signalling goes through a TCP balancer the test controls (her media
 * goes straight to LiveKit over UDP, as on a network that drops the TCP connection).
 */
const GATEWAY = Number(process.env.KOINOS_GATEWAY_PORT ?? 7880);

async function aliceBehind(balancer: Balancer, alice: Page): Promise<string> {
  await pointLiveKitUrlAt(alice, await balancer.listen());
  return joinDemoCall(alice, "alice");
}

/** Whether `userId` has a live MatrixRTC membership in the room. */
async function inCall(roomId: string, userId: string): Promise<boolean> {
  return (await liveCallMemberships(roomId)).some((key) => key.includes(userId));
}

test("a dropped connection shows 'Reconnecting' while it is down, then 'Reconnected', and the call goes on", async ({ openUserPage }) => {
  const balancer = new Balancer(GATEWAY);
  try {
    const alice = await openUserPage("alice");
    await aliceBehind(balancer, alice);
    const bob = await openUserPage("bob");
    await joinDemoCall(bob, "bob");
    await expectMediaFlowing(alice, "alice");

    const status = alice.getByTestId("call_status");
    await expect(status).toHaveText("Connected.");
    // One tile each before the cut: a participant an earlier test's page left behind stays in
    // LiveKit until its departure timeout, and alice, cut off, would not see it go.
    await expect(alice.getByTestId("tile")).toHaveCount(2, { timeout: CONNECT_TIMEOUT });
    balancer.refusing = true;
    balancer.cut();
    await expect(status).toHaveText("Connection lost. Reconnecting…");
    await expect(status).toHaveAttribute("data-connection", "reconnecting");
    // Still down a few seconds later: the page keeps saying so, and keeps the call on screen.
    await alice.waitForTimeout(4_000);
    await expect(status).toHaveAttribute("data-connection", "reconnecting");
    await expect(alice.getByTestId("tile")).toHaveCount(2);

    balancer.refusing = false;
    await expect(status).toHaveText("Reconnected.", { timeout: CONNECT_TIMEOUT });
    await expect(status).toHaveAttribute("data-connection", "reconnected");
    await expectMediaFlowing(alice, "alice");
    await expectMediaFlowing(bob, "bob");
    // The notice goes back to normal by itself.
    await expect(status).toHaveText("Connected.", { timeout: 20_000 });
  } finally {
    await balancer.close();
  }
});

test("a connection that does not come back ends in a clear message with Rejoin, which brings the person back", async ({ openUserPage }) => {
  test.setTimeout(300_000);
  const balancer = new Balancer(GATEWAY);
  try {
    const alice = await openUserPage("alice");
    const aliceId = await aliceBehind(balancer, alice);
    const roomId = roomIdOf(alice);
    const bob = await openUserPage("bob");
    await joinDemoCall(bob, "bob");
    await expectMediaFlowing(alice, "alice");
    expect(await inCall(roomId, aliceId)).toBe(true);

    balancer.refusing = true;
    balancer.cut();
    await expect(alice.getByTestId("call_status")).toHaveText("Connection lost. Reconnecting…");
    // livekit-client retries for 12 s; then the page re-joins on its own with fresh tickets for
    // a minute (recovery.ts), saying so in the same place, before it gives up.
    await expect(alice.getByTestId("call_status")).toHaveText("Reconnecting the call…", { timeout: 30_000 });
    await expect(alice.getByTestId("call_status")).toHaveAttribute("data-connection", "reconnecting");
    const ended = alice.getByTestId("call_ended");
    await expect(ended).toContainText("The connection to the call was lost.", { timeout: 120_000 });
    await expect(alice.getByTestId("tile")).toHaveCount(0);
    await expect(alice.getByRole("button", { name: "Leave call" })).toHaveCount(0);
    // bob's side no longer shows her once LiveKit notices she is gone.
    await expect(bob.locator('[data-testid="tile"][data-local="false"]')).toHaveCount(0, { timeout: 60_000 });
    // Nor does the case room: her call membership is withdrawn.
    await expect.poll(() => inCall(roomId, aliceId), { timeout: 30_000 }).toBe(false);

    balancer.refusing = false;
    await alice.getByRole("button", { name: "Rejoin" }).click();
    await expect
      .poll(() => alice.evaluate(() => window.__koinosRoom?.state ?? "none"), { timeout: CONNECT_TIMEOUT })
      .toBe("connected");
    await expect(bob.locator('[data-testid="tile"][data-local="false"]')).toHaveCount(1, { timeout: CONNECT_TIMEOUT });
    await expectMediaFlowing(alice, "alice");
    await expectMediaFlowing(bob, "bob");
    // Her membership is back, and stays (the withdrawal did not overtake the new join).
    await expect.poll(() => inCall(roomId, aliceId), { timeout: 30_000 }).toBe(true);
    await alice.waitForTimeout(3_000);
    expect(await inCall(roomId, aliceId)).toBe(true);
  } finally {
    await balancer.close();
  }
});
