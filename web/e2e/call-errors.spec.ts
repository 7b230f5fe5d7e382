import { DEMO_CASE, enterCall, expect, openCase, signIn, test } from "./fixtures";

/**
 * The control plane's token refusals reach the user as clear sentences, and a refused join
 * does not leave the user in the call. The token endpoint is stubbed in the browser (the
 * "call is full" case would otherwise need seven browsers); everything else is the real stack.
 */
const cases = [
  { name: "not a member (403)", status: 403, body: { errcode: "M_FORBIDDEN", error: "You are not a member of this room." }, category: "forbidden", message: "You are not a member of this case." },
  { name: "call full (409)", status: 409, body: { errcode: "M_LIMIT_EXCEEDED", error: "The call is full (6 participants)." }, category: "full", message: "This call is full (6 participants)." },
  { name: "server unreachable (after a minute of retrying)", status: 0, body: null, category: "network", message: "Cannot reach the server." },
] as const;

for (const c of cases) {
  test(`a refused token is shown to the user: ${c.name}`, async ({ openUserPage }) => {
    const page = await openUserPage("carol");
    const carolId = await signIn(page, "carol");
    await page.route("**/api/rtc/token", async (route) => {
      if (c.status === 0) {
        await route.abort("connectionrefused");
      } else {
        await route.fulfill({ status: c.status, contentType: "application/json", body: JSON.stringify(c.body) });
      }
    });
    await openCase(page, DEMO_CASE);
    await enterCall(page);

    if (c.status === 0) {
      // Unreachable is waited for (a restart), saying so, for a minute before it is an error.
      await expect(page.getByTestId("call_status")).toHaveText("The call service is temporarily unavailable; retrying…");
    }
    const error = page.getByTestId("call_error");
    await expect(error).toHaveText(c.message, { timeout: 120_000 });
    await expect(error).toHaveAttribute("data-category", c.category);
    await expect(page.getByTestId("call_view")).toHaveCount(0);
    expect(await page.evaluate(() => window.__koinosRoom === undefined)).toBe(true);
    // The MatrixRTC membership written before asking for the token has been withdrawn.
    await expect(page.locator(`[data-testid="call_participant"][data-user-id="${carolId}"]`)).toHaveCount(0, {
      timeout: 30_000,
    });
  });
}
