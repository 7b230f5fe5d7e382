import { accessTokenOf, expect, HOMESERVER_URL, joinDemoCall, roomIdOf, roomState, test } from "./fixtures";

const RECORDING_EVENT = "org.koinos.call.recording";

async function recordingFlag(roomId: string): Promise<unknown> {
  return (await roomState(roomId)).find((e) => e.type === RECORDING_EVENT && e.state_key === "")?.content.active;
}

test("the host flags the call as recorded: everyone sees the badge until the host clears it; others cannot set it", async ({ openUserPage }) => {
  const alice = await openUserPage("alice");
  await joinDemoCall(alice, "alice");
  const roomId = roomIdOf(alice);

  const bob = await openUserPage("bob");
  await joinDemoCall(bob, "bob");

  for (const page of [alice, bob]) await expect(page.getByTestId("recording_badge")).toHaveCount(0);
  // Only hosts get the control; the homeserver refuses anyone else (power levels).
  await expect(bob.getByTestId("toggle_recording_flag")).toHaveCount(0);
  const bobToken = await accessTokenOf("bob");
  const refused = await fetch(`${HOMESERVER_URL}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/${RECORDING_EVENT}/`, {
    method: "PUT",
    headers: { Authorization: `Bearer ${bobToken}`, "Content-Type": "application/json" },
    body: JSON.stringify({ active: true }),
  });
  expect(refused.status).toBe(403);

  await alice.getByRole("button", { name: "Flag the call as recorded" }).click();
  for (const page of [alice, bob]) {
    await expect(page.getByRole("status", { name: "This call is being recorded" })).toHaveText(/Recording/);
  }
  expect(await recordingFlag(roomId)).toBe(true);
  await expect(alice.getByRole("button", { name: "Clear the recording flag" })).toHaveAttribute("aria-pressed", "true");

  // Someone joining later sees it too.
  const carol = await openUserPage("carol");
  await joinDemoCall(carol, "carol");
  await expect(carol.getByTestId("recording_badge")).toBeVisible();

  await alice.getByRole("button", { name: "Clear the recording flag" }).click();
  for (const page of [alice, bob, carol]) await expect(page.getByTestId("recording_badge")).toHaveCount(0);
  expect(await recordingFlag(roomId)).toBe(false);
});
