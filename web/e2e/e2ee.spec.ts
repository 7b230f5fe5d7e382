import type { Page } from "@playwright/test";
import {
  DEMO_CASE,
  ENCRYPTED_CASE,
  expect,
  expectMediaFlowing,
  inboundCounters,
  joinCall,
  mintLiveKitToken,
  openCase,
  signIn,
  test,
} from "./fixtures";
import { readFileSync } from "node:fs";

/**
 * End-to-end encrypted calls in an encrypted case room (dev/seed.py's "Encrypted case"): each
 * page draws its media key, matrix-js-sdk's MatrixRTC session sends it to the others over
 * Olm-encrypted to-device messages, and livekit-client encrypts every frame with it. The media
 * still goes through the gateway and LiveKit, which never see a key.
 */

async function joinEncryptedCall(page: Page, user: string): Promise<void> {
  await signIn(page, user);
  await openCase(page, ENCRYPTED_CASE);
  await joinCall(page);
}

/** Every remote track this page subscribes to, and whether LiveKit's client decrypts it. */
async function remoteEncryption(page: Page): Promise<{ tracks: number; encrypted: number; roomE2ee: boolean }> {
  return page.evaluate(() => {
    const room = window.__koinosRoom;
    let tracks = 0;
    let encrypted = 0;
    for (const p of room?.remoteParticipants.values() ?? []) {
      for (const pub of p.trackPublications.values()) {
        if (!pub.isSubscribed) continue;
        tracks++;
        if (pub.isEncrypted) encrypted++;
      }
    }
    return { tracks, encrypted, roomE2ee: room?.isE2EEEnabled ?? false };
  });
}

test("two practitioners in an encrypted case see and hear each other, every track encrypted, and the call says so", async ({ openUserPage }) => {
  test.setTimeout(180_000);
  const alice = await openUserPage("alice");
  await joinEncryptedCall(alice, "alice");
  const bob = await openUserPage("bob");
  await joinEncryptedCall(bob, "bob");

  await expectMediaFlowing(alice, "alice");
  await expectMediaFlowing(bob, "bob");
  for (const page of [alice, bob]) {
    await expect(page.getByTestId("e2ee_badge")).toHaveAccessibleName("This call is end-to-end encrypted");
    await expect.poll(() => remoteEncryption(page)).toEqual({ tracks: 2, encrypted: 2, roomE2ee: true });
  }
});

/** The participant attribute naming its Matrix user (the shared contract). */
const MATRIX_USER_ATTRIBUTE = (
  JSON.parse(readFileSync(new URL("../../proto/contract/matrix.json", import.meta.url), "utf8")) as {
    participant_attributes: { matrix_user: string };
  }
).participant_attributes.matrix_user;

/** Video bytes this page receives from remote tracks (inbound-rtp), decoded or not. */
async function videoBytesReceived(page: Page): Promise<number> {
  return page.evaluate(async () => {
    let bytes = 0;
    for (const p of window.__koinosRoom?.remoteParticipants.values() ?? []) {
      for (const pub of p.trackPublications.values()) {
        (await pub.track?.getRTCStatsReport())?.forEach((stat: { type?: string; kind?: string; bytesReceived?: number }) => {
          if (stat.type === "inbound-rtp" && stat.kind === "video") bytes += stat.bytesReceived ?? 0;
        });
      }
    }
    return bytes;
  });
}

/**
 * The eavesdropper: what LiveKit (or whoever runs it) forwards, as a subscriber without the keys
 * sees it. dave, a member of the cases (so control's enforcement lets him stay), with a token for
 * the call's LiveKit room minted with LiveKit's own key, on a page that joins the call of the
 * unencrypted case, so it has no key provider and takes the frames as they come.
 */
async function eavesdropOn(openUserPage: (label: string) => Promise<Page>, livekitRoom: string): Promise<Page> {
  const eve = await openUserPage("eve");
  const identity = "@dave:localhost:EAVESDROPPER";
  const attributes = { [MATRIX_USER_ATTRIBUTE]: "@dave:localhost" };
  const jwt = mintLiveKitToken(
    { sub: identity, attributes, video: { room: livekitRoom, roomJoin: true, canSubscribe: true, canPublish: false } },
    600,
  );
  await eve.route("**/api/rtc/token", (route) => route.fulfill({ json: { url: "ws://localhost:7881", jwt, identity } }));
  await signIn(eve, "dave");
  await openCase(eve, DEMO_CASE);
  await joinCall(eve);
  expect(await eve.evaluate(() => window.__koinosRoom?.name)).toBe(livekitRoom);
  // Both practitioners' video reaches it.
  await expect.poll(() => videoBytesReceived(eve), { timeout: 30_000 }).toBeGreaterThan(50_000);
  return eve;
}

async function livekitRoomOfCall(page: Page): Promise<string> {
  const name = await page.evaluate(() => window.__koinosRoom?.name ?? "");
  expect(name).not.toBe("");
  return name;
}

test("a LiveKit subscriber without the keys receives the encrypted call's video and decodes none of it", async ({ openUserPage }) => {
  test.setTimeout(180_000);
  const alice = await openUserPage("alice");
  await joinEncryptedCall(alice, "alice");
  const bob = await openUserPage("bob");
  await joinEncryptedCall(bob, "bob");
  await expectMediaFlowing(alice, "alice");

  const eve = await eavesdropOn(openUserPage, await livekitRoomOfCall(alice));
  // Not one frame decodes, while the practitioners keep decoding each other's.
  const before = await inboundCounters(eve);
  await expectMediaFlowing(alice, "alice");
  await expectMediaFlowing(bob, "bob");
  expect((await inboundCounters(eve)).framesDecoded).toBe(before.framesDecoded);
  expect(before.framesDecoded).toBe(0);
});

test("the same eavesdropper on an unencrypted case's call decodes its video (what encryption takes away)", async ({ openUserPage }) => {
  test.setTimeout(180_000);
  const alice = await openUserPage("alice");
  await signIn(alice, "alice");
  await openCase(alice, DEMO_CASE);
  await joinCall(alice);
  const bob = await openUserPage("bob");
  await signIn(bob, "bob");
  await openCase(bob, DEMO_CASE);
  await joinCall(bob);
  await expectMediaFlowing(alice, "alice");
  await expect(alice.getByTestId("e2ee_badge")).toHaveCount(0);

  const eve = await eavesdropOn(openUserPage, await livekitRoomOfCall(alice));
  await expect.poll(async () => (await inboundCounters(eve)).framesDecoded, { timeout: 30_000 }).toBeGreaterThan(0);
});
