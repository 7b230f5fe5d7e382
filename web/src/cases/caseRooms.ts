import { Preset, type MatrixClient, type Room } from "matrix-js-sdk";
import { serverNameOf } from "../auth/session";
import { AppErrorException, toAppError } from "../errors/errors";

/** `creation_content.type` of a case room (design.md). */
export const CASE_ROOM_TYPE = "org.koinos.case";
/** MatrixRTC membership state event type (Element Call "compatibility" mode). */
export const CALL_MEMBER_EVENT_TYPE = "org.matrix.msc3401.call.member";

/** Control plane's service account on the user's own homeserver. */
export function serviceAccountFor(userId: string): string {
  return `@koinos-rtc:${serverNameOf(userId)}`;
}

export function isCaseRoom(room: Room): boolean {
  return room.getType() === CASE_ROOM_TYPE;
}

export function isJoinedCase(room: Room): boolean {
  return room.getMyMembership() === "join" && isCaseRoom(room);
}

/** The user's joined case rooms, sorted by name. */
export function listJoinedCases(client: MatrixClient): Room[] {
  return client
    .getRooms()
    .filter(isJoinedCase)
    .sort((a, b) => a.name.localeCompare(b.name) || a.roomId.localeCompare(b.roomId));
}

/** The homeserver's usual per-event levels for a private room (kept when overriding `events`). */
const DEFAULT_EVENT_LEVELS: Record<string, number> = {
  "m.room.name": 50,
  "m.room.avatar": 50,
  "m.room.canonical_alias": 50,
  "m.room.topic": 50,
  "m.room.power_levels": 100,
  "m.room.history_visibility": 100,
  "m.room.tombstone": 100,
  "m.room.server_acl": 100,
  "m.room.encryption": 100,
};

/**
 * Room versions in which the creator's power is implicit (MSC4289) and creators must not be
 * listed in `users` of the power levels.
 */
function creatorsArePrivileged(roomVersion: string | undefined): boolean {
  if (!roomVersion) return false;
  if (roomVersion.startsWith("org.matrix.hydra")) return true;
  const n = Number(roomVersion);
  return Number.isInteger(n) && n >= 12;
}

async function defaultRoomVersion(client: MatrixClient): Promise<string | undefined> {
  try {
    const caps = await client.getCapabilities();
    return caps["m.room_versions"]?.default;
  } catch {
    return undefined;
  }
}

/**
 * Creates a case room per design.md: room type org.koinos.case, call.member events allowed for
 * everyone (power level 0), the creator and control's service account at power level 100,
 * and the service account invited.
 */
export async function createCase(client: MatrixClient, name: string): Promise<string> {
  const me = client.getSafeUserId();
  const service = serviceAccountFor(me);
  const users: Record<string, number> = { [service]: 100 };
  // In room versions with privileged creators the creator already has infinite power and
  // may not appear in `users`; everywhere else the creator is set to 100 explicitly.
  if (!creatorsArePrivileged(await defaultRoomVersion(client))) {
    users[me] = 100;
  }
  try {
    const { room_id } = await client.createRoom({
      name: name.trim(),
      preset: Preset.PrivateChat,
      creation_content: { type: CASE_ROOM_TYPE },
      power_level_content_override: {
        // The homeserver replaces (not merges) `events`, so the usual defaults are restated.
        events: { ...DEFAULT_EVENT_LEVELS, [CALL_MEMBER_EVENT_TYPE]: 0 },
        users,
      },
      invite: [service],
    });
    return room_id;
  } catch (err) {
    throw new AppErrorException(toAppError(err));
  }
}
