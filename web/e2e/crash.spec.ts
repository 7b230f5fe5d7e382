import { CONNECT_TIMEOUT, DEMO_CASE, expect, openCase, roomIdOf, roomState, signIn, test } from "./fixtures";

/**
 * A practitioner's browser dies mid-call (no leave sent). On a homeserver with MSC4140 delayed
 * events (Synapse here) the client's own delayed leave, scheduled by matrix-js-sdk while the
 * call ran, clears the membership: the clearing event is sent as the practitioner, a few seconds
 * after the crash, well before control's reaper (which clears ghosts as its service account,
 * `call.ghost_after` after the LiveKit participant left; see control/tests/stack.rs for that
 * path).
 */
test("a crashed browser's call membership is cleared by its own delayed leave", async ({ openUserPage }) => {
  const dave = await openUserPage("dave");
  const daveId = await signIn(dave, "dave");
  await openCase(dave, DEMO_CASE);
  const roomId = roomIdOf(dave);

  await dave.getByRole("button", { name: /^(Start call|Join call)$/ }).click();
  await expect
    .poll(() => dave.evaluate(() => window.__koinosRoom?.state ?? "none"), { timeout: CONNECT_TIMEOUT })
    .toBe("connected");
  const deviceId = await dave.evaluate(() => window.__koinosRoom?.localParticipant.attributes["org.koinos.matrix_device_id"]);
  expect(deviceId, "control's token names the Matrix device").toBeTruthy();
  const stateKey = `_${daveId}_${deviceId}_m.call`;
  const mine = async () => (await roomState(roomId)).find((e) => e.state_key === stateKey);
  await expect.poll(async () => Object.keys((await mine())?.content ?? {}).length).toBeGreaterThan(0);

  // The renderer dies: no pagehide, no leave, no goodbye to LiveKit.
  const cdp = await dave.context().newCDPSession(dave);
  const crashed = dave.waitForEvent("crash");
  // The command never gets an answer from a renderer that is gone: do not wait for one.
  void cdp.send("Page.crash").catch(() => undefined);
  await crashed;
  const crashedAt = Date.now();

  await expect
    .poll(async () => (await mine())?.content ?? null, { timeout: 60_000, intervals: [1000] })
    .toEqual({});
  console.log(`membership cleared ${((Date.now() - crashedAt) / 1000).toFixed(1)} s after the crash`);
  const cleared = await mine();
  expect(cleared?.sender, "the homeserver sent dave's own delayed leave").toBe(daveId);
});
