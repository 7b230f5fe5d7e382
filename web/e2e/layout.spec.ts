import { expect, joinDemoCall, test, tileLayout } from "./fixtures";

/**
 * The call view from a laptop screen down to a phone-width window: every tile and control in
 * reach, none overlapping, a shared screen readable. (Six people at laptop and phone width are
 * checked in ladder.spec.ts, where six browsers are in the call anyway.)
 */
test("three people and a screen share fit a laptop screen and a phone-width window", async ({ openUserPage }) => {
  const alice = await openUserPage("alice");
  await joinDemoCall(alice, "alice");
  const bob = await openUserPage("bob");
  await joinDemoCall(bob, "bob");
  const carol = await openUserPage("carol");
  await joinDemoCall(carol, "carol");
  await expect(alice.getByTestId("tile")).toHaveCount(3, { timeout: 60_000 });

  // A laptop: three tiles in a 2×2 grid, the whole grid on screen with the controls.
  await alice.setViewportSize({ width: 1366, height: 768 });
  await expect.poll(() => tileLayout(alice)).toEqual({ tiles: 3, columns: 2, rows: 2, problems: [] });
  await expect(alice.getByTestId("tiles")).toBeInViewport({ ratio: 1 });

  await bob.getByRole("button", { name: "Share your screen" }).click();
  await expect(alice.getByTestId("screen_tile")).toBeVisible({ timeout: 30_000 });
  await expect.poll(() => tileLayout(alice)).toMatchObject({ tiles: 4, problems: [] });

  // A phone held upright: the shared screen takes the full width, the cameras two by two below,
  // nothing scrolls sideways, every control can be reached and tapped.
  await alice.setViewportSize({ width: 390, height: 844 });
  await expect.poll(() => tileLayout(alice)).toEqual({ tiles: 4, columns: 2, rows: 2, problems: [] });
  const grid = await alice.getByTestId("tiles").boundingBox();
  const screen = await alice.getByTestId("screen_tile").boundingBox();
  expect(screen?.width).toBeCloseTo(grid?.width ?? 0, 0);
  for (const control of await alice.getByRole("toolbar", { name: "Call controls" }).getByRole("button").all()) {
    await control.scrollIntoViewIfNeeded();
    await expect(control).toBeInViewport({ ratio: 1 });
  }
  // Still usable there: muting works from the phone layout.
  await alice.getByRole("button", { name: "Mute microphone" }).click();
  await expect(alice.getByRole("button", { name: "Unmute microphone" })).toBeVisible();

  // Two people left on the phone: one column, one above the other.
  await bob.getByRole("button", { name: "Leave call" }).click();
  await expect(alice.getByTestId("screen_tile")).toHaveCount(0, { timeout: 30_000 });
  await expect.poll(() => tileLayout(alice), { timeout: 30_000 }).toEqual({ tiles: 2, columns: 1, rows: 2, problems: [] });
});
