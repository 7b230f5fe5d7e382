import type { Page } from "@playwright/test";
import {
  CONNECT_TIMEOUT,
  expect,
  expectMediaFlowing,
  joinDemoCall,
  mutedFor,
  openLobby,
  publishedDevice,
  test,
} from "./fixtures";

/**
 * The lobby between Start/Join call and the call: camera preview, microphone level, device
 * choice, and going in with microphone and camera on or off. Also what a person sees when the
 * browser refuses the camera and microphone, and on a computer without a camera.
 */

/** The device behind the lobby's preview video, "" when there is none. */
async function previewDevice(page: Page): Promise<string> {
  return page.evaluate(() => {
    const video = document.querySelector<HTMLVideoElement>('[data-testid="lobby_preview"]');
    const track = (video?.srcObject as MediaStream | null)?.getVideoTracks()[0];
    return track && track.readyState === "live" ? (track.getSettings().deviceId ?? "") : "";
  });
}

/** Whether the preview is really showing frames. */
async function previewPlaying(page: Page): Promise<boolean> {
  return page.evaluate(() => {
    const video = document.querySelector<HTMLVideoElement>('[data-testid="lobby_preview"]');
    return video !== null && video.videoWidth > 0 && !video.paused;
  });
}

async function micLevel(page: Page): Promise<number> {
  return Number(await page.getByTestId("mic_level").getAttribute("data-level"));
}

async function waitConnected(page: Page): Promise<void> {
  await expect
    .poll(() => page.evaluate(() => window.__koinosRoom?.state ?? "none"), { timeout: CONNECT_TIMEOUT })
    .toBe("connected");
}

test("the lobby previews the chosen camera and shows the microphone's level; joining muted with the camera off is what the others see, and the choice is remembered", async ({
  openUserPage,
}) => {
  const bob = await openUserPage("bob");
  await joinDemoCall(bob, "bob");

  const alice = await openUserPage("alice");
  await openLobby(alice, "alice");
  await expect(alice.getByTestId("lobby_participants")).toContainText("bob");
  await expect.poll(() => previewPlaying(alice)).toBe(true);
  // Chromium's fake microphone beeps: the meter moves.
  await expect.poll(() => micLevel(alice), { timeout: 15_000 }).toBeGreaterThan(0.01);

  // Both fake cameras are offered, with their names; choosing the second previews it.
  const cameras = alice.getByTestId("select_camera").locator("option");
  await expect(cameras).toHaveCount(2);
  await expect(cameras.first()).not.toHaveText("");
  const second = await cameras.nth(1).getAttribute("value");
  expect(second).toBeTruthy();
  await alice.getByTestId("select_camera").selectOption(second ?? "");
  await expect.poll(() => previewDevice(alice)).toBe(second);
  await expect.poll(() => previewPlaying(alice)).toBe(true);
  await expect(alice.getByTestId("select_microphone").locator("option")).not.toHaveCount(0);
  // Back to the first: Chromium's second fake camera previews but never feeds an encoder (see
  // devices.spec.ts), and bob is to see what alice publishes.
  const first = await cameras.nth(0).getAttribute("value");
  await alice.getByTestId("select_camera").selectOption(first ?? "");
  await expect.poll(() => previewDevice(alice)).toBe(first);

  // Microphone off: the meter rests and the lobby says so. Camera off: the preview stops.
  await alice.getByTestId("lobby").getByRole("button", { name: "Mute microphone" }).click();
  await expect(alice.getByText("You will join muted.")).toBeVisible();
  await expect.poll(() => micLevel(alice)).toBe(0);
  await alice.getByTestId("lobby").getByRole("button", { name: "Stop camera" }).click();
  await expect(alice.getByTestId("lobby_preview")).toHaveCount(0);
  await expect(alice.getByTestId("lobby_preview_off")).toHaveText("Your camera is off");

  await alice.getByRole("button", { name: "Join now" }).click();
  await waitConnected(alice);
  await expect(alice.getByTestId("toggle_mic")).toHaveAccessibleName("Unmute microphone");
  await expect(alice.getByTestId("toggle_camera")).toHaveAccessibleName("Start camera");
  // bob sees her in the call, publishing neither microphone nor camera.
  const aliceOnBob = bob.locator('[data-testid="tile"][data-local="false"]');
  await expect(aliceOnBob).toHaveCount(1, { timeout: CONNECT_TIMEOUT });
  await expect(aliceOnBob.getByTitle("Microphone off")).toBeVisible();
  await expect(aliceOnBob.locator(".avatar")).toBeVisible();
  expect(await mutedFor(bob, "alice", "microphone")).toBeNull();
  expect(await mutedFor(bob, "alice", "camera")).toBeNull();
  // She still hears and sees bob.
  await expectMediaFlowing(alice, "alice");

  // Turning the camera on in the call uses the camera chosen in the lobby, and bob gets it.
  await alice.getByRole("button", { name: "Start camera" }).click();
  await expect.poll(async () => (await publishedDevice(alice, "camera")).deviceId).toBe(first);
  await expect.poll(() => mutedFor(bob, "alice", "camera")).toBe(false);
  await expect(aliceOnBob.locator(".avatar")).toHaveCount(0);

  // The next lobby starts the way this one was left: muted, on the camera chosen.
  await alice.getByRole("button", { name: "Leave call" }).click();
  await alice.getByRole("button", { name: "Join call" }).click();
  await expect(alice.getByTestId("lobby_toggle_mic")).toHaveAccessibleName("Unmute microphone");
  await expect(alice.getByTestId("select_camera")).toHaveValue(first ?? "");
  // Cancel leaves no capture running.
  await alice.getByTestId("lobby_cancel").click();
  await expect(alice.getByTestId("lobby")).toHaveCount(0);
  await expect(alice.getByRole("button", { name: "Join call" })).toBeVisible();
});

test("when the browser refuses the camera and microphone, the lobby says how to allow them and the person can still join to listen", async ({
  openUserPage,
}) => {
  const bob = await openUserPage("bob");
  await joinDemoCall(bob, "bob");

  const carol = await openUserPage("carol", { media: "denied" });
  await openLobby(carol, "carol");
  await expect(carol.getByTestId("lobby_camera_error")).toHaveText(/does not allow this page to use your camera\. Allow it in the site settings/);
  await expect(carol.getByTestId("lobby_camera_error")).toHaveAttribute("data-category", "media");
  await expect(carol.getByTestId("lobby_microphone_error")).toHaveText(/does not allow this page to use your microphone/);
  await expect(carol.getByTestId("lobby_preview")).toHaveCount(0);

  await carol.getByRole("button", { name: "Join now" }).click();
  await waitConnected(carol);
  // In the call, listening and watching; trying the camera again explains the refusal again.
  await expectMediaFlowing(carol, "carol");
  await expect(carol.getByTestId("toggle_camera")).toHaveAccessibleName("Start camera");
  await carol.getByRole("button", { name: "Start camera" }).click();
  await expect(carol.getByTestId("call_notice")).toHaveText(/does not allow this page to use your camera/);
  await expect(bob.locator('[data-testid="tile"][data-local="false"]')).toHaveCount(1, { timeout: CONNECT_TIMEOUT });
  expect(await mutedFor(bob, "carol", "camera")).toBeNull();
});

test("on a computer without a camera the lobby says so, and the person joins with the microphone alone", async ({ openUserPage }) => {
  const bob = await openUserPage("bob");
  await joinDemoCall(bob, "bob");

  const dave = await openUserPage("dave", { media: "no-camera" });
  await openLobby(dave, "dave");
  await expect(dave.getByTestId("lobby_camera_error")).toHaveText("No camera was found. Connect one, or join without it.");
  await expect(dave.getByTestId("select_camera")).toBeDisabled();
  await expect(dave.getByTestId("select_camera")).toHaveText("No camera found");
  await expect.poll(() => micLevel(dave), { timeout: 15_000 }).toBeGreaterThan(0.01);
  expect(await dave.getByTestId("lobby_microphone_error").count()).toBe(0);

  await dave.getByRole("button", { name: "Join now" }).click();
  await waitConnected(dave);
  await expect.poll(() => mutedFor(bob, "dave", "microphone"), { timeout: CONNECT_TIMEOUT }).toBe(false);
  expect(await mutedFor(bob, "dave", "camera")).toBeNull();
  // Joining without a camera is no failure: no notice in the call.
  await expect(dave.getByTestId("call_notice")).toHaveCount(0);
});
