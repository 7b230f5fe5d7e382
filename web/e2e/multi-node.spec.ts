import type { Page } from "@playwright/test";
import {
  CONNECT_TIMEOUT,
  callMembershipEvents,
  expect,
  joinDemoCall,
  pointLiveKitUrlAt,
  roomIdOf,
  stackCtlInBackground,
  test,
  untilMediaFlowsOnAll,
} from "./fixtures";

/**
 * LiveKit's own distributed mode (`dev/stack multi-node on`: two nodes sharing Redis, gateway A
 * in front of node A, gateway B of node B). `dev/stack e2e` (make test) switches the stack over and runs this
 * spec with KOINOS_MULTI_NODE=1 after the others.
 */
test.skip(!process.env.KOINOS_MULTI_NODE, "needs the dev stack in multi-node mode (dev/stack multi-node on)");

const GATEWAY_B = Number(process.env.KOINOS_GATEWAY_B_PORT ?? 7884);
const NODES = [
  { program: "livekit", metrics: 7894 },
  { program: "livekit-b", metrics: 7895 },
] as const;
const RECOVERY_BOUND_MS = 40_000;

/** Participants each LiveKit node hosts now (its Prometheus gauge); 0 when it is down. */
async function hostedParticipants(metricsPort: number): Promise<number> {
  const text = await fetch(`http://127.0.0.1:${metricsPort}/metrics`)
    .then((r) => r.text())
    .catch(() => "");
  const line = text.split("\n").find((l) => l.startsWith("livekit_participant_total{"));
  return line ? Number(line.split(" ").pop()) : 0;
}

test("the LiveKit node hosting a four-person call killed: everyone is back in the call by themselves", async ({ openUserPage }) => {
  test.setTimeout(300_000);
  // alice and bob signal through gateway A (node A), carol and dave through gateway B (node B):
  // whichever node hosts the room, half the call reaches it through the other one.
  const pages: Page[] = [];
  for (const user of ["alice", "bob", "carol", "dave"]) {
    const page = await openUserPage(user);
    if (user === "carol" || user === "dave") await pointLiveKitUrlAt(page, GATEWAY_B);
    await joinDemoCall(page, user);
    pages.push(page);
  }
  await untilMediaFlowsOnAll(pages, CONNECT_TIMEOUT);
  for (const page of pages) await expect(page.locator('[data-testid="tile"][data-local="false"]')).toHaveCount(3);
  const roomId = roomIdOf(pages[0]!);
  const memberships = await callMembershipEvents(roomId);
  expect(Object.keys(memberships)).toHaveLength(4);

  const counts = await Promise.all(NODES.map((n) => hostedParticipants(n.metrics)));
  const host = NODES[counts[0]! >= counts[1]! ? 0 : 1];
  expect(Math.max(...counts), "one node hosts all four").toBe(4);

  // The node is gone at once (the supervisor starts it again, as Kubernetes would the pod).
  await stackCtlInBackground("signal", "KILL", host.program);
  const back = await untilMediaFlowsOnAll(pages, RECOVERY_BOUND_MS);
  console.log(
    `[faults] ${JSON.stringify({ component: "livekit node (multi-node)", fault: "crash", until: "media on all four pages", fromFaultMs: back, hostKilled: host.program })}`,
  );

  for (const page of pages) {
    await expect(page.getByTestId("call_status")).toHaveAttribute("data-connection", /^(reconnected|connected)$/, { timeout: CONNECT_TIMEOUT });
    await expect(page.locator('[data-testid="tile"][data-local="false"]')).toHaveCount(3);
    await expect(page.locator('[data-testid="tile"][data-local="true"]')).toHaveCount(1);
    await expect(page.getByTestId("call_ended")).toHaveCount(0);
  }
  // One call again, on one node; the case room saw no leave and no join.
  await expect.poll(async () => Math.max(...(await Promise.all(NODES.map((n) => hostedParticipants(n.metrics))))), { timeout: 30_000 }).toBe(4);
  expect(await callMembershipEvents(roomId)).toEqual(memberships);
});
