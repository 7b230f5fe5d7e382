import type { Page } from "@playwright/test";
import { DEMO_CASE, expect, inboundVideoHeights, joinCall, openCase, signIn, test } from "./fixtures";

/**
 * The quality ladder is enforced by the gateway, per subscriber, with no help from the page
 * (which sends no track settings: adaptiveStream is off). Publishers send 360/540/720 layers.
 * A 720p stream starts low while bandwidth ramps up, so heights are read once they settle.
 */

/** Waits until every remote camera this page receives is exactly `lines` high. */
async function settlesAt(page: Page, remotes: number, lines: number): Promise<void> {
  await expect
    .poll(() => inboundVideoHeights(page), { timeout: 90_000, intervals: [1000] })
    .toEqual(Array<number>(remotes).fill(lines));
}

test("each subscriber gets 540 lines in a 3-person call, also after a resume, and 720 again when it shrinks to 2", async ({ openUserPage }) => {
  test.setTimeout(300_000);
  const pages: Page[] = [];
  for (const user of ["erin", "frank", "carol"]) {
    const page = await openUserPage(user);
    await signIn(page, user);
    await openCase(page, DEMO_CASE);
    await joinCall(page);
    pages.push(page);
  }
  const [erin, frank, carol] = pages as [Page, Page, Page];

  for (const page of pages) await settlesAt(page, 2, 540);
  // And it stays there: never above the cap while the call has three people.
  for (let i = 0; i < 5; i++) {
    for (const page of pages) {
      for (const height of await inboundVideoHeights(page)) expect(height).toBeLessThanOrEqual(540);
    }
    await erin.waitForTimeout(1000);
  }

  // A signalling resume (the client drops its WebSocket and resumes through the gateway, which
  // sees a fresh session): the cap holds.
  const resumed = erin.evaluate(
    () =>
      new Promise<void>((resolve) => {
        const room = window.__koinosRoom;
        room?.once("reconnected", () => resolve());
        void room?.simulateScenario("signal-reconnect");
      }),
  );
  await resumed;
  for (let i = 0; i < 10; i++) {
    for (const height of await inboundVideoHeights(erin)) expect(height).toBeLessThanOrEqual(540);
    await erin.waitForTimeout(1000);
  }
  await settlesAt(erin, 2, 540);

  await carol.getByRole("button", { name: "Leave call" }).click();
  await expect(carol.getByTestId("call_view")).toHaveCount(0, { timeout: 30_000 });
  await settlesAt(erin, 1, 720);
  await settlesAt(frank, 1, 720);
});

test("in a full 6-person call every subscriber gets at most 360 lines", async ({ openUserPage }) => {
  test.setTimeout(480_000);
  const pages: Page[] = [];
  for (const user of ["alice", "bob", "carol", "dave", "erin", "frank"]) {
    const page = await openUserPage(user);
    await signIn(page, user);
    await openCase(page, DEMO_CASE);
    await joinCall(page);
    pages.push(page);
  }
  for (const page of pages) await settlesAt(page, 5, 360);
  for (let i = 0; i < 5; i++) {
    for (const page of pages) {
      for (const height of await inboundVideoHeights(page)) expect(height).toBeLessThanOrEqual(360);
    }
    await pages[0]?.waitForTimeout(1000);
  }
});
