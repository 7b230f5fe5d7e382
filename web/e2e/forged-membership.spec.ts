import type { Page } from "@playwright/test";
import { DEMO_CASE, HOMESERVER_URL, accessTokenOf, expect, joinDemoCall, openCase, roomIdOf, signIn, test } from "./fixtures";

const CALL_MEMBER = "org.matrix.msc3401.call.member";

function listedNames(page: Page): Promise<string[]> {
  return page.getByRole("list", { name: "In the call" }).getByRole("listitem").allTextContents();
}

/** `writer` writes `content` into call membership slot `stateKey` (a member may, in room versions without MSC3757). */
async function writeSlot(writer: string, roomId: string, stateKey: string, content: Record<string, unknown>): Promise<void> {
  const token = await accessTokenOf(writer);
  const response = await fetch(
    `${HOMESERVER_URL}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/${CALL_MEMBER}/${encodeURIComponent(stateKey)}`,
    { method: "PUT", headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" }, body: JSON.stringify(content) },
  );
  expect(response.ok, `${writer} writes ${stateKey}`).toBe(true);
}

/**
 * Every state the case view's "In the call" list goes through from now on (a DOM observer in the
 * page records each change, so that a list shown for a single render is caught).
 */
async function recordListed(page: Page): Promise<void> {
  await page.evaluate(() => {
    const w = window as unknown as { __listed: string[][] };
    w.__listed = [];
    const read = (): string[] =>
      [...document.querySelectorAll('[aria-label="In the call"] li')].map((li) => li.textContent ?? "").sort();
    let last = JSON.stringify(read());
    w.__listed.push(read());
    new MutationObserver(() => {
      const now = JSON.stringify(read());
      if (now !== last) {
        last = now;
        w.__listed.push(read());
      }
    }).observe(document.body, { subtree: true, childList: true, characterData: true });
  });
}

async function listedSince(page: Page, ms: number): Promise<string[][]> {
  await page.waitForTimeout(ms);
  return page.evaluate(() => (window as unknown as { __listed: string[][] }).__listed);
}

test("a member cannot put a fake call membership into a colleague's slot, nor make a colleague vanish from the call", async ({ openUserPage }) => {
  const carol = await openUserPage("carol");
  await signIn(carol, "carol");
  await openCase(carol, DEMO_CASE);
  const alice = await openUserPage("alice");
  await joinDemoCall(alice, "alice");
  await expect.poll(() => listedNames(carol)).toEqual(["alice"]);
  const roomId = roomIdOf(carol);
  await recordListed(carol);

  // bob writes a live membership into dave's slot: MatrixRTC clients would show it (as bob's).
  await writeSlot("bob", roomId, "_@dave:localhost_FORGED_m.call", {
    application: "m.call",
    call_id: "",
    scope: "m.room",
    device_id: "FORGED",
    expires: 3_600_000,
    focus_active: { type: "livekit", focus_selection: "multi_sfu" },
    foci_preferred: [{ type: "livekit", livekit_service_url: "http://localhost:8080/api/rtc", livekit_alias: roomId }],
  });
  expect(await listedSince(carol, 4_000)).toEqual([["alice"]]);

  // bob erases alice's real membership: the page does not take his word for it, and alice's
  // own client sends hers again.
  const aliceDevice = await alice.evaluate(() => {
    for (let i = 0; i < localStorage.length; i++) {
      const value = localStorage.getItem(localStorage.key(i) ?? "") ?? "";
      try {
        const parsed = JSON.parse(value) as { deviceId?: unknown };
        if (typeof parsed.deviceId === "string") return parsed.deviceId;
      } catch {
        // not the session
      }
    }
    return "";
  });
  expect(aliceDevice).not.toBe("");
  const aliceSlot = `_@alice:localhost_${aliceDevice}_m.call`;
  await writeSlot("bob", roomId, aliceSlot, {});
  expect(await listedSince(carol, 4_000)).toEqual([["alice"]]);
});
