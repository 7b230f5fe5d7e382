import { Balancer, expect, gatewayMetric, inboundVideoHeights, joinDemoCall, test, threeWithCarolAt, videoSettlesAt } from "./fixtures";

/**
 * Two gateway instances in front of one LiveKit (dev/stack runs the second on :7884), sharing
 * nothing. A session's state lives in its own connection and is rebuilt from LiveKit when the
 * session resumes, so a resume that lands on the other instance keeps the cap.
 */
const GATEWAY_A = Number(process.env.KOINOS_GATEWAY_PORT ?? 7880);
const GATEWAY_B = Number(process.env.KOINOS_GATEWAY_B_PORT ?? 7884);

test("a session resumed on another gateway instance keeps the cap, and it follows the call size there: the instances share no state", async ({ openUserPage }) => {
  test.setTimeout(300_000);
  const balancer = new Balancer(GATEWAY_B);
  const balancerPort = await balancer.listen();
  try {
    const sessionsBefore = {
      a: await gatewayMetric("koinos_gateway_sessions", GATEWAY_A),
      b: await gatewayMetric("koinos_gateway_sessions", GATEWAY_B),
    };
    const pages = await threeWithCarolAt(openUserPage, balancerPort);
    const [alice, bob, carol] = pages;
    expect(await gatewayMetric("koinos_gateway_sessions", GATEWAY_B)).toBe(sessionsBefore.b + 1);
    expect(await gatewayMetric("koinos_gateway_sessions", GATEWAY_A)).toBe(sessionsBefore.a + 2);
    for (const page of pages) await videoSettlesAt(page, 2, 540);

    // Instance B goes away for carol; her client resumes through the balancer, now on A.
    balancer.target = GATEWAY_A;
    const reconnected = carol.evaluate(
      () =>
        new Promise<void>((resolve) => {
          window.__koinosRoom?.once("reconnected", () => resolve());
        }),
    );
    balancer.cut();
    await reconnected;
    await expect.poll(() => gatewayMetric("koinos_gateway_sessions", GATEWAY_A)).toBe(sessionsBefore.a + 3);
    expect(await gatewayMetric("koinos_gateway_sessions", GATEWAY_B)).toBe(sessionsBefore.b);

    // A had never seen carol's session: what it knows of her call it learnt from LiveKit on
    // the resume. The cap holds (540 for three, never more)...
    for (let i = 0; i < 5; i++) {
      for (const height of await inboundVideoHeights(carol)) expect(height).toBeLessThanOrEqual(540);
      await carol.waitForTimeout(1000);
    }
    await videoSettlesAt(carol, 2, 540);
    // ...and when the call grows to five, A lowers it on the subscriptions B had set up (alice's
    // and bob's cameras), which it can only do if the resume told it about them.
    for (const user of ["dave", "erin"]) {
      const page = await openUserPage(user);
      await joinDemoCall(page, user);
    }
    await videoSettlesAt(carol, 4, 360, "highest");
    for (const page of [alice, bob]) await videoSettlesAt(page, 4, 360, "highest");

    // carol leaves while the balancer still carries her session, so that LiveKit does not keep
    // her as a silent participant into the next test.
    await carol.getByRole("button", { name: "Leave call" }).click();
    await expect(carol.getByTestId("call_view")).toHaveCount(0, { timeout: 30_000 });
    await expect.poll(() => gatewayMetric("koinos_gateway_sessions", GATEWAY_A)).toBe(sessionsBefore.a + 4);
  } finally {
    await balancer.close();
  }
});
