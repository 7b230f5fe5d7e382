import type { Page } from "@playwright/test";
import { DEMO_CASE, expect, joinCall, joinDemoCall, mutedFor, openCase, signIn, test } from "./fixtures";

/** Display names the case view lists as in the call (this page is not in it). */
function listedNames(page: Page): Promise<string[]> {
  return page.getByRole("list", { name: "In the call" }).getByRole("listitem").allTextContents();
}

test("a third member's case view lists the live call by name as people join and leave; joining from one's own case view after it started", async ({ openUserPage }) => {
  // carol watches "Demo case" without joining.
  const carol = await openUserPage("carol");
  await signIn(carol, "carol");
  await openCase(carol, DEMO_CASE);
  await expect(carol.getByRole("button", { name: "Start call" })).toBeVisible();

  const alice = await openUserPage("alice");
  await joinDemoCall(alice, "alice");
  await expect.poll(() => listedNames(carol)).toEqual(["alice"]);
  await expect(carol.getByRole("button", { name: "Join call" })).toBeVisible();

  // bob opens the case after the call started: he sees it running, with alice, and joins it.
  const bob = await openUserPage("bob");
  await signIn(bob, "bob");
  await openCase(bob, DEMO_CASE);
  await expect.poll(() => listedNames(bob)).toEqual(["alice"]);
  await joinCall(bob);
  await expect.poll(async () => (await listedNames(carol)).sort()).toEqual(["alice", "bob"]);

  await alice.getByRole("button", { name: "Leave call" }).click();
  await expect.poll(() => listedNames(carol), { timeout: 30_000 }).toEqual(["bob"]);
  await bob.getByRole("button", { name: "Leave call" }).click();
  await expect(carol.getByTestId("call_participants")).toHaveCount(0, { timeout: 30_000 });
  await expect(carol.getByRole("button", { name: "Start call" })).toBeVisible();
});

test("microphone and camera toggles are seen by the other side", async ({ openUserPage }) => {
  const alice = await openUserPage("alice");
  await joinDemoCall(alice, "alice");
  const bob = await openUserPage("bob");
  await joinDemoCall(bob, "bob");
  await expect.poll(() => mutedFor(bob, "alice", "microphone")).toBe(false);
  await expect.poll(() => mutedFor(bob, "alice", "camera")).toBe(false);
  const aliceTile = bob.locator('[data-testid="tile"][data-local="false"]');

  await alice.getByRole("button", { name: "Mute microphone" }).click();
  await expect.poll(() => mutedFor(bob, "alice", "microphone")).toBe(true);
  await expect(aliceTile.getByTitle("Microphone off")).toBeVisible();
  await alice.getByRole("button", { name: "Unmute microphone" }).click();
  await expect.poll(() => mutedFor(bob, "alice", "microphone")).toBe(false);
  await expect(aliceTile.getByTitle("Microphone off")).toHaveCount(0);

  await alice.getByRole("button", { name: "Stop camera" }).click();
  await expect.poll(() => mutedFor(bob, "alice", "camera")).toBe(true);
  // Her tile shows her initial instead of video.
  await expect(aliceTile.locator(".avatar")).toBeVisible();
  await alice.getByRole("button", { name: "Start camera" }).click();
  await expect.poll(() => mutedFor(bob, "alice", "camera")).toBe(false);
  await expect(aliceTile.locator(".avatar")).toHaveCount(0);
});
