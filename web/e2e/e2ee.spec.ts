import type { Page } from "@playwright/test";
import {
  accessTokenOf,
  DEMO_CASE,
  ENCRYPTED_CASE,
  expect,
  expectMediaFlowing,
  inboundCounters,
  joinCall,
  mintLiveKitToken,
  openCase,
  postAsUser,
  roomIdOf,
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

/** `users` join the call of `caseName` (the encrypted case unless said), one after the other; their pages. */
async function inCall(openUserPage: (label: string) => Promise<Page>, users: string[], caseName = ENCRYPTED_CASE): Promise<Page[]> {
  const pages: Page[] = [];
  for (const user of users) {
    const page = await openUserPage(user);
    await signIn(page, user);
    await openCase(page, caseName);
    await joinCall(page);
    pages.push(page);
  }
  return pages;
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
  const [alice, bob] = (await inCall(openUserPage, ["alice", "bob"])) as [Page, Page];

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
  const [alice, bob] = (await inCall(openUserPage, ["alice", "bob"])) as [Page, Page];
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
  const [alice] = (await inCall(openUserPage, ["alice", "bob"], DEMO_CASE)) as [Page, Page];
  await expectMediaFlowing(alice, "alice");
  await expect(alice.getByTestId("e2ee_badge")).toHaveCount(0);

  const eve = await eavesdropOn(openUserPage, await livekitRoomOfCall(alice));
  await expect.poll(async () => (await inboundCounters(eve)).framesDecoded, { timeout: 30_000 }).toBeGreaterThan(0);
});

/** The newest key index this page holds for `identity`'s media (its key provider's key ring). */
async function keyIndexOf(page: Page, identity: string): Promise<number> {
  return page.evaluate((id) => {
    const e2ee = window.__koinosRoom?.options.e2ee;
    const keys = e2ee && "keyProvider" in e2ee ? e2ee.keyProvider.getKeys() : [];
    const indices = keys.filter((k) => k.participantIdentity === id).map((k) => k.keyIndex ?? 0);
    return indices.length === 0 ? -1 : Math.max(...indices);
  }, identity);
}

/** Video frames this page decoded from `identity`'s camera so far. */
async function framesDecodedFrom(page: Page, identity: string): Promise<number> {
  return page.evaluate(async (id) => {
    let frames = 0;
    for (const pub of window.__koinosRoom?.remoteParticipants.get(id)?.trackPublications.values() ?? []) {
      (await pub.track?.getRTCStatsReport())?.forEach((stat: { type?: string; kind?: string; framesDecoded?: number }) => {
        if (stat.type === "inbound-rtp" && stat.kind === "video") frames += stat.framesDecoded ?? 0;
      });
    }
    return frames;
  }, identity);
}

async function identityOf(page: Page): Promise<string> {
  return page.evaluate(() => window.__koinosRoom?.localParticipant.identity ?? "");
}

/** `viewer` keeps decoding `identity`'s video. */
async function expectDecoding(viewer: Page, identity: string): Promise<void> {
  const before = await framesDecodedFrom(viewer, identity);
  await expect.poll(() => framesDecodedFrom(viewer, identity), { timeout: 30_000 }).toBeGreaterThan(before);
}

test("a late joiner gets the keys in use: video from everyone at once, decrypted with the key each sends with", async ({ openUserPage }) => {
  test.setTimeout(180_000);
  const [alice, bob] = (await inCall(openUserPage, ["alice", "bob"])) as [Page, Page];
  await expectMediaFlowing(alice, "alice");
  const [aliceId, bobId] = [await identityOf(alice), await identityOf(bob)];
  expect(await keyIndexOf(alice, aliceId)).toBeGreaterThanOrEqual(0);

  // (matrix-js-sdk may draw a new key for a newcomer, so that it cannot read what was sent
  // before it came; it hands the newcomer that key at once.)
  const [carol] = (await inCall(openUserPage, ["carol"])) as [Page];
  await expectDecoding(carol, aliceId);
  await expectDecoding(carol, bobId);
  await expect.poll(async () => (await keyIndexOf(carol, aliceId)) === (await keyIndexOf(alice, aliceId))).toBe(true);
  await expect.poll(async () => (await keyIndexOf(carol, bobId)) === (await keyIndexOf(bob, bobId))).toBe(true);
});

test("a member removed from an encrypted case: the others' keys rotate, and they go on decoding each other", async ({ openUserPage }) => {
  test.setTimeout(240_000);
  const [alice, bob, carol] = (await inCall(openUserPage, ["alice", "bob", "carol"])) as [Page, Page, Page];
  const [aliceId, bobId, carolId] = [await identityOf(alice), await identityOf(bob), await identityOf(carol)];
  await expectDecoding(carol, aliceId);
  await expectDecoding(alice, carolId);
  const aliceKey = await keyIndexOf(alice, aliceId);
  const carolKey = await keyIndexOf(carol, carolId);
  // What bob holds of alice's key before he goes.
  expect(await keyIndexOf(bob, aliceId)).toBe(aliceKey);

  const room = encodeURIComponent(roomIdOf(alice));
  const aliceToken = await accessTokenOf("alice");
  const bobUser = bobId.slice(0, bobId.lastIndexOf(":"));
  try {
    await postAsUser(aliceToken, `/rooms/${room}/kick`, { user_id: bobUser, reason: "e2e: removed from the encrypted case" });
    await expect.poll(() => bob.evaluate(() => window.__koinosRoom?.state ?? "gone"), { timeout: 10_000, intervals: [200] }).toBe("gone");
    // Each one left draws a new key and hands it only to those still in the call.
    await expect.poll(() => keyIndexOf(alice, aliceId), { timeout: 60_000 }).not.toBe(aliceKey);
    await expect.poll(() => keyIndexOf(carol, carolId), { timeout: 60_000 }).not.toBe(carolKey);
    await expect.poll(() => keyIndexOf(carol, aliceId), { timeout: 30_000 }).toBe(await keyIndexOf(alice, aliceId));
    await expect.poll(() => keyIndexOf(alice, carolId), { timeout: 30_000 }).toBe(await keyIndexOf(carol, carolId));
    await expectDecoding(carol, aliceId);
    await expectDecoding(alice, carolId);
  } finally {
    await postAsUser(aliceToken, `/rooms/${room}/invite`, { user_id: bobUser }).catch(() => undefined);
    await postAsUser(await accessTokenOf("bob"), `/join/${room}`, {});
  }
});

test("this device's crypto store lives in the browser while signed in and is gone after signing out", async ({ openUserPage }) => {
  const page = await openUserPage("alice");
  await signIn(page, "alice");
  const cryptoStores = (): Promise<string[]> =>
    page.evaluate(async () => (await indexedDB.databases()).map((db) => db.name ?? "").filter((name) => name.endsWith("::matrix-sdk-crypto")));
  await expect.poll(cryptoStores).toEqual([expect.stringMatching(/^koinos-rtc:@alice:localhost:[A-Z]+::matrix-sdk-crypto$/)]);
  await page.getByRole("button", { name: "Sign out" }).click();
  await expect(page.getByLabel("Username")).toBeVisible();
  await expect.poll(cryptoStores).toEqual([]);
});
