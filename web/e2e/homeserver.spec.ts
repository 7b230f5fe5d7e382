import type { Page } from "@playwright/test";
import { DEMO_PASSWORD, HOMESERVER_URL, expect, expectMediaFlowing, joinDemoCall, test } from "./fixtures";

/**
 * The homeserver out of reach, as a practitioner meets it: at sign-in, and in the middle of a
 * call (the call is LiveKit's and carries on; the page says the case's news is on hold).
 * The browser's requests to the homeserver fail at the network level; Synapse itself keeps running
 * for the other participants.
 */
async function cutHomeserver(page: Page): Promise<void> {
  await page.route(`${HOMESERVER_URL}/**`, (route) => route.abort("connectionrefused"));
}

async function restoreHomeserver(page: Page): Promise<void> {
  await page.unroute(`${HOMESERVER_URL}/**`);
}

test("signing in while the homeserver cannot be reached says so, and works once it is back", async ({ openUserPage }) => {
  const page = await openUserPage("carol");
  await page.goto("/");
  await cutHomeserver(page);
  await page.getByLabel("Username").fill("carol");
  await page.getByLabel("Password").fill(DEMO_PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("alert")).toHaveText("Cannot reach the server.");
  await expect(page.getByRole("alert")).toHaveAttribute("data-category", "network");
  // Nothing typed is lost: the form is still filled in.
  await expect(page.getByLabel("Username")).toHaveValue("carol");

  await restoreHomeserver(page);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("button", { name: "Sign out" })).toBeVisible({ timeout: 30_000 });
});

test("losing the homeserver during a call is shown, the call carries on, and the notice goes once it is back", async ({ openUserPage }) => {
  const alice = await openUserPage("alice");
  await joinDemoCall(alice, "alice");
  const bob = await openUserPage("bob");
  await joinDemoCall(bob, "bob");
  await expect(alice.getByTestId("homeserver_unreachable")).toHaveCount(0);

  await cutHomeserver(alice);
  // The sync request in flight (a 30 s long poll) ends before the next one fails.
  const notice = alice.getByTestId("homeserver_unreachable");
  await expect(notice).toBeVisible({ timeout: 90_000 });
  await expect(notice).toHaveRole("status");
  await expect(notice).toContainText("Cannot reach the server.");
  await expectMediaFlowing(alice, "alice");
  await expect(alice.getByTestId("call_view")).toBeVisible();

  await restoreHomeserver(alice);
  await expect(notice).toHaveCount(0, { timeout: 90_000 });
  await expectMediaFlowing(alice, "alice");
});
