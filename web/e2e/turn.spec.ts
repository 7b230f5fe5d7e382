import { trackPeerConnections } from "./element-call/support";
import { expect, expectMediaFlowing, joinDemoCall, test } from "./fixtures";

test("the page sets up its media with TURN credentials from control, and still joins when control cannot give any", async ({ openUserPage }) => {
  const alice = await openUserPage("alice");
  await trackPeerConnections(alice.context());
  const turnAnswers: number[] = [];
  alice.on("response", (r) => {
    if (r.url().endsWith("/api/rtc/turn")) turnAnswers.push(r.status());
  });
  await joinDemoCall(alice, "alice");
  expect(turnAnswers).toEqual([200]);
  // Every peer connection LiveKit opened uses our coturn with alice's time-limited credentials.
  const configs = await alice.evaluate(() =>
    ((window as unknown as { __koinosPeerConnections?: RTCPeerConnection[] }).__koinosPeerConnections ?? []).map(
      (pc) => pc.getConfiguration().iceServers ?? [],
    ),
  );
  expect(configs.length).toBeGreaterThan(0);
  for (const servers of configs) {
    expect(servers).toEqual([
      expect.objectContaining({
        urls: ["turn:localhost:3478?transport=udp", "turn:localhost:3478?transport=tcp"],
        username: expect.stringMatching(/^\d+:@alice:localhost$/),
      }),
    ]);
  }

  // bob's control cannot issue TURN credentials (as if coturn's secret were missing): he joins
  // with LiveKit's own ICE servers, and the two exchange media.
  const bob = await openUserPage("bob");
  await bob.route("**/api/rtc/turn", (route) =>
    route.fulfill({ status: 503, json: { errcode: "M_UNAVAILABLE", error: "The service is temporarily unavailable; try again shortly." } }),
  );
  await joinDemoCall(bob, "bob");
  await expectMediaFlowing(alice, "alice");
  await expectMediaFlowing(bob, "bob");
});
