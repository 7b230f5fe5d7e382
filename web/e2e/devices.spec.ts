import type { Page } from "@playwright/test";
import { expect, expectMediaFlowing, inboundCounters, joinDemoCall, openLobby, publishedDevice, test } from "./fixtures";

/** The output device of every remote audio element on the page. */
async function audioSinks(page: Page): Promise<string[]> {
  return page.evaluate(() =>
    [...document.querySelectorAll<HTMLAudioElement>('[data-testid="tile"] audio')].filter((a) => a.srcObject).map((a) => a.sinkId),
  );
}

/** Options of a picker as [value, label]. */
async function options(page: Page, testId: string): Promise<[string, string][]> {
  return page.getByTestId(testId).locator("option").evaluateAll((els) => els.map((o) => [(o as HTMLOptionElement).value, o.textContent ?? ""] as [string, string]));
}

async function growing(read: () => Promise<number>): Promise<void> {
  const before = await read();
  await expect.poll(read, { timeout: 30_000 }).toBeGreaterThan(before);
}

test("device pickers list the fake devices; switching microphone and camera republishes from the new device, and the speaker choice reaches every remote audio element", async ({ openUserPage }) => {
  const alice = await openUserPage("alice");
  await joinDemoCall(alice, "alice");
  const bob = await openUserPage("bob");
  await joinDemoCall(bob, "bob");

  // Chromium's fake devices: three microphones, two cameras (device-count=2), three outputs.
  const mics = await options(alice, "select_microphone");
  const cameras = await options(alice, "select_camera");
  const speakers = await options(bob, "select_speaker");
  expect(mics.map(([, label]) => label)).toEqual(["Fake Default Audio Input", "Fake Audio Input 1", "Fake Audio Input 2"]);
  expect(cameras.map(([, label]) => label)).toEqual(["fake_device_0", "fake_device_1"]);
  expect(speakers.map(([, label]) => label)).toEqual(["Fake Default Audio Output", "Fake Audio Output 1", "Fake Audio Output 2"]);

  // Microphone: the published track now comes from the chosen input, and bob still hears alice.
  const micBefore = await publishedDevice(alice, "microphone");
  const [micId] = mics.find(([id]) => id !== micBefore.deviceId && id !== "default") ?? [];
  expect(micId).toBeDefined();
  await alice.getByRole("combobox", { name: "Microphone" }).selectOption(micId as string);
  await expect.poll(async () => (await publishedDevice(alice, "microphone")).deviceId).toBe(micId);
  await expect(alice.getByRole("combobox", { name: "Microphone" })).toHaveValue(micId as string);
  await growing(async () => (await inboundCounters(bob)).audioBytesReceived);

  // Camera: the published track is replaced by one from the chosen camera, and switching back
  // brings alice's video to bob again. (Chromium's second fake camera never feeds a video
  // encoder — plain RTCPeerConnection.replaceTrack to it stalls as well — so frames are checked
  // after switching back to the first.)
  const camBefore = await publishedDevice(alice, "camera");
  const [otherCam] = cameras.find(([id]) => id !== camBefore.deviceId) ?? [];
  const camera = alice.getByRole("combobox", { name: "Camera" });
  await camera.selectOption(otherCam as string);
  await expect.poll(async () => (await publishedDevice(alice, "camera")).deviceId).toBe(otherCam);
  expect((await publishedDevice(alice, "camera")).trackId).not.toBe(camBefore.trackId);
  await expect(camera).toHaveValue(otherCam as string);
  await camera.selectOption(camBefore.deviceId);
  await expect.poll(async () => (await publishedDevice(alice, "camera")).deviceId).toBe(camBefore.deviceId);
  await growing(async () => (await inboundCounters(bob)).framesDecoded);

  // Speaker: bob's choice is the sink of every remote audio element, including later arrivals.
  const [speakerId] = speakers.find(([, label]) => label === "Fake Audio Output 1") ?? [];
  await bob.getByRole("combobox", { name: "Speaker" }).selectOption(speakerId as string);
  await expect.poll(() => audioSinks(bob)).toEqual([speakerId]);
  const carol = await openUserPage("carol");
  await joinDemoCall(carol, "carol");
  await expect.poll(() => audioSinks(bob), { timeout: 30_000 }).toEqual([speakerId, speakerId]);
  await expect(bob.getByTestId("control_error")).toHaveCount(0);
  await expect(alice.getByTestId("control_error")).toHaveCount(0);
});

test("the speaker chosen in the lobby is where the call plays", async ({ openUserPage }) => {
  const alice = await openUserPage("alice");
  await joinDemoCall(alice, "alice");
  const bob = await openUserPage("bob");
  await openLobby(bob, "bob");
  await expect(bob.getByTestId("select_speaker").getByRole("option", { name: "Fake Audio Output 2" })).toHaveCount(1);
  const [speakerId] = (await options(bob, "select_speaker")).find(([, label]) => label === "Fake Audio Output 2") ?? [];
  expect(speakerId).toBeDefined();
  await bob.getByRole("combobox", { name: "Speaker" }).selectOption(speakerId as string);
  await bob.getByRole("button", { name: "Join now" }).click();

  await expect.poll(() => audioSinks(bob), { timeout: 60_000 }).toEqual([speakerId]);
  await expect(bob.getByRole("combobox", { name: "Speaker" })).toHaveValue(speakerId as string);
});

test("where the browser cannot choose the speaker, the lobby and the call say so instead of failing, and the call still plays", async ({
  openUserPage,
}) => {
  const alice = await openUserPage("alice");
  await joinDemoCall(alice, "alice");
  const carol = await openUserPage("carol");
  // As in Safari or an older Firefox: media elements without setSinkId.
  await carol.addInitScript(() => {
    Reflect.deleteProperty(HTMLMediaElement.prototype, "setSinkId");
  });
  await openLobby(carol, "carol");
  const note = "This browser plays the call on the system's default speaker; change it in your system settings.";
  await expect(carol.getByTestId("lobby").getByTestId("speaker_unsupported")).toHaveText(note);
  await expect(carol.getByTestId("select_speaker")).toHaveCount(0);
  await expect(carol.getByTestId("select_microphone")).toBeVisible();

  await carol.getByRole("button", { name: "Join now" }).click();
  await expect(carol.getByTestId("call_view").getByTestId("speaker_unsupported")).toHaveText(note, { timeout: 60_000 });
  await expect(carol.getByTestId("select_speaker")).toHaveCount(0);
  await expectMediaFlowing(carol, "carol");
  await expect(carol.getByTestId("control_error")).toHaveCount(0);
  await expect(carol.getByTestId("call_notice")).toHaveCount(0);
});
