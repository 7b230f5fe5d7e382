import { type Page } from "@playwright/test";
import { DEMO_PASSWORD } from "./env";

/** The homeserver, read and written as the test users: access tokens, room state, call memberships, the host's end of the call. */

export const HOMESERVER_URL = process.env.KOINOS_HS_URL ?? "http://localhost:8008";

const CALL_MEMBER = "org.matrix.msc3401.call.member";

/** The case room id shown in the page's URL (`#/case/<roomId>`). */
export function roomIdOf(page: Page): string {
  const encoded = /#\/case\/([^/?]+)/.exec(page.url())?.[1];
  if (!encoded) throw new Error(`not on a case page: ${page.url()}`);
  return decodeURIComponent(encoded);
}

export interface StateEvent {
  type: string;
  state_key: string;
  sender: string;
  origin_server_ts: number;
  content: Record<string, unknown>;
}

/** POSTs `body` to the client-server API's `path` (after `/_matrix/client/v3`) as the holder of `token`. */
export async function postAsUser(token: string, path: string, body: unknown): Promise<void> {
  const response = await fetch(`${HOMESERVER_URL}/_matrix/client/v3${path}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status} ${await response.text()}`);
}

/** A fresh access token for `user` (device E2ECHECK), for reading and writing as them. */
export async function accessTokenOf(user: string): Promise<string> {
  const login = await fetch(`${HOMESERVER_URL}/_matrix/client/v3/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      type: "m.login.password",
      identifier: { type: "m.id.user", user },
      password: DEMO_PASSWORD,
      device_id: "E2ECHECK",
    }),
  });
  const { access_token: token } = (await login.json()) as { access_token: string };
  return token;
}

/** The room's current state, read straight from the homeserver with a fresh login as `user`. */
export async function roomState(roomId: string, user = "alice"): Promise<StateEvent[]> {
  const token = await accessTokenOf(user);
  const response = await fetch(`${HOMESERVER_URL}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  if (!response.ok) throw new Error(`room state: HTTP ${response.status}`);
  return (await response.json()) as StateEvent[];
}

/**
 * Call memberships in the room's current state that still claim a live call (non-empty content
 * not yet expired), read from the homeserver — not through the page.
 */
export async function liveCallMemberships(roomId: string, user = "alice"): Promise<string[]> {
  return (await roomState(roomId, user))
    .filter((e) => e.type === CALL_MEMBER && e.content.application !== undefined)
    .filter((e) => {
      const created = typeof e.content.created_ts === "number" ? e.content.created_ts : e.origin_server_ts;
      const expires = typeof e.content.expires === "number" ? e.content.expires : 4 * 3600_000;
      return created + expires > Date.now();
    })
    .map((e) => e.state_key);
}

/** Asks control to end the case's call (`POST /api/rtc/end`) as `user`, proving who with an OpenID token. */
export async function endCallAs(user: string, roomId: string): Promise<{ status: number; errcode?: string }> {
  const token = await accessTokenOf(user);
  const whoami = (await (await fetch(`${HOMESERVER_URL}/_matrix/client/v3/account/whoami`, { headers: { Authorization: `Bearer ${token}` } })).json()) as {
    user_id: string;
  };
  const openid: unknown = await (
    await fetch(`${HOMESERVER_URL}/_matrix/client/v3/user/${encodeURIComponent(whoami.user_id)}/openid/request_token`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: "{}",
    })
  ).json();
  const control = process.env.KOINOS_WEB_URL ?? "http://localhost:8080";
  const response = await fetch(`${control}/api/rtc/end`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ room_id: roomId, openid_token: openid }),
  });
  const body = (await response.json().catch(() => ({}))) as { errcode?: string };
  return { status: response.status, ...(body.errcode ? { errcode: body.errcode } : {}) };
}

/** Call memberships in the room's state with when each was last sent (a re-send is churn). */
export async function callMembershipEvents(roomId: string): Promise<Record<string, number>> {
  const live = new Set(await liveCallMemberships(roomId));
  const events: Record<string, number> = {};
  for (const e of await roomState(roomId)) {
    if (e.type === CALL_MEMBER && live.has(e.state_key)) events[e.state_key] = e.origin_server_ts;
  }
  return events;
}

/** Sets `user`'s Matrix display name (in every room they are in); returns the one it replaced. */
export async function setDisplayName(user: string, displayname: string): Promise<string> {
  const token = await accessTokenOf(user);
  const url = `${HOMESERVER_URL}/_matrix/client/v3/profile/${encodeURIComponent(`@${user}:localhost`)}/displayname`;
  const before = (await (await fetch(url)).json()) as { displayname?: string };
  const response = await fetch(url, {
    method: "PUT",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ displayname }),
  });
  if (!response.ok) throw new Error(`setting ${user}'s display name: ${response.status}`);
  return before.displayname ?? user;
}
