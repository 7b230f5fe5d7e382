import {
  DEMO_CASE,
  HOMESERVER_URL,
  expect,
  joinCall,
  openCase,
  roomIdOf,
  roomState,
  signIn,
  test,
} from "./fixtures";

const CONTROL_SERVICE_ACCOUNT = "@koinos-rtc:localhost";

async function homeserverHasDelayedEvents(): Promise<boolean> {
  const versions = (await (await fetch(`${HOMESERVER_URL}/_matrix/client/versions`)).json()) as {
    unstable_features?: Record<string, boolean>;
  };
  return versions.unstable_features?.["org.matrix.msc4140"] === true;
}

/**
 * A practitioner's browser dies mid-call (no leave sent); no ghost may stay in the call.
 * - With MSC4140 delayed events (Synapse as configured by dev/stack): the client's own delayed
 *   leave, scheduled by matrix-js-sdk while the call ran, clears the membership a few seconds
 *   after the crash. The clearing event is sent as the practitioner.
 * - Without them (`dev/stack delayed-events off`, as on Tuwunel): control sees the LiveKit
 *   participant go and, `call.ghost_after` later, clears the membership as its service account.
 * `dev/stack e2e` runs this test in both modes.
 */
test("a crashed browser leaves no ghost call membership", async ({ openUserPage }) => {
  const delayedEvents = await homeserverHasDelayedEvents();
  const dave = await openUserPage("dave");
  const daveId = await signIn(dave, "dave");
  await openCase(dave, DEMO_CASE);
  const roomId = roomIdOf(dave);

  await joinCall(dave);
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
    .poll(async () => (await mine())?.content ?? null, { timeout: 120_000, intervals: [1000] })
    .toEqual({});
  console.log(`membership cleared ${((Date.now() - crashedAt) / 1000).toFixed(1)} s after the crash`);
  const cleared = await mine();
  if (delayedEvents) {
    expect(cleared?.sender, "the homeserver sent dave's own delayed leave").toBe(daveId);
  } else {
    expect(cleared?.sender, "control's reaper cleared the ghost").toBe(CONTROL_SERVICE_ACCOUNT);
  }
});
