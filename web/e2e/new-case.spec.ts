import { enterCall, expect, openCase, roomState, roomIdOf, signIn, test, CONNECT_TIMEOUT } from "./fixtures";

/**
 * A case created from the page follows the same rules as the seeded one (design.md): room type
 * org.koinos.case, call memberships at power level 0, control's service account invited at
 * power level 100 — and control accepts the invite by itself, which is what lets a call start.
 */
test("a new case follows the case-room rules (end-to-end encrypted, its call's slot open) and can hold an encrypted call", async ({ openUserPage }) => {
  const page = await openUserPage("dave");
  await signIn(page, "dave");
  const name = `E2E case ${Date.now()}`;
  await page.getByLabel("Case name").fill(name);
  await page.getByRole("button", { name: "New case" }).click();
  await expect(page.getByTestId("case_name")).toHaveText(name, { timeout: 30_000 });
  const roomId = roomIdOf(page);

  const state = await roomState(roomId, "dave");
  const event = (type: string, key = ""): Record<string, unknown> | undefined =>
    state.find((e) => e.type === type && e.state_key === key)?.content;
  expect(event("m.room.create")?.type).toBe("org.koinos.case");
  const power = event("m.room.power_levels") as {
    events: Record<string, number>;
    users: Record<string, number>;
  };
  expect(power.events["org.matrix.msc3401.call.member"]).toBe(0);
  expect(power.users["@koinos-rtc:localhost"]).toBe(100);
  // The homeserver's own defaults for sensitive events are kept.
  expect(power.events["m.room.power_levels"]).toBe(100);
  // End-to-end encrypted, and the call's MatrixRTC slot open with per-member media keys, which
  // only an admin may change.
  expect(event("m.room.encryption")?.algorithm).toBe("m.megolm.v1.aes-sha2");
  expect(event("org.matrix.msc4143.rtc.slot", "m.call#ROOM")).toEqual({
    status: "open",
    application: { type: "m.call" },
    encryption: { type: "org.matrix.msc4143.per_member" },
  });
  expect(power.events["org.matrix.msc4143.rtc.slot"]).toBe(100);

  // Control joins on the invite; then the page can start a call in the new case.
  await expect
    .poll(async () => (await roomState(roomId, "dave")).find((e) => e.type === "m.room.member" && e.state_key === "@koinos-rtc:localhost")?.content.membership, {
      timeout: 30_000,
    })
    .toBe("join");
  await page.goto("/");
  await openCase(page, name);
  await enterCall(page, "Start call");
  await expect
    .poll(() => page.evaluate(() => window.__koinosRoom?.state ?? "none"), { timeout: CONNECT_TIMEOUT })
    .toBe("connected");
  await expect(page.getByTestId("e2ee_badge")).toBeVisible();
  expect(await page.evaluate(() => window.__koinosRoom?.isE2EEEnabled)).toBe(true);
  await page.getByRole("button", { name: "Leave call" }).click();
  await expect(page.getByRole("button", { name: "Start call" })).toBeVisible({ timeout: 30_000 });
});
