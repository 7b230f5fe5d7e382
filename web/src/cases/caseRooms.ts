import type { MatrixClient, Preset, Room } from "matrix-js-sdk";
import { serverNameOf } from "../auth/session";
import { AppErrorException, toAppError } from "../errors/errors";
// How a case room is created, shared with the seeding and the load tester (and control's type
// check): the page builds its createRoom body from the contract itself, not from a copy.
import caseRoom from "../../../proto/contract/case-room.json";
import matrixContract from "../../../proto/contract/matrix.json";

/** `creation_content.type` of a case room (design.md). */
export const CASE_ROOM_TYPE: string = caseRoom.type;
/** MatrixRTC membership state event type (Element Call "compatibility" mode). */
export const CALL_MEMBER_EVENT_TYPE: string = matrixContract.events.call_member;

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

/**
 * Room versions in which the creator's power is implicit (MSC4289) and creators must not be
 * listed in `users` of the power levels.
 */
export function creatorsArePrivileged(roomVersion: string | undefined): boolean {
  if (!roomVersion) return false;
  const rule = caseRoom.privileged_creators;
  if (rule.room_version_prefixes.some((prefix) => roomVersion.startsWith(prefix))) return true;
  const n = Number(roomVersion);
  return /^[0-9]+$/.test(roomVersion) && n >= rule.from_numeric_room_version;
}

async function defaultRoomVersion(client: MatrixClient): Promise<string | undefined> {
  try {
    const caps = await client.getCapabilities();
    return caps["m.room_versions"]?.default;
  } catch {
    return undefined;
  }
}

/** The createRoom body of a case room named `name` by `creator` (see proto/contract/case-room.json). */
export function caseRoomRequest(name: string, creator: string, roomVersion: string | undefined) {
  const service = serviceAccountFor(creator);
  const users: Record<string, number> = { [service]: caseRoom.admin_power_level };
  // In room versions with privileged creators the creator already has infinite power and
  // may not appear in `users`; everywhere else the creator is set to the admin level explicitly.
  if (!creatorsArePrivileged(roomVersion)) {
    users[creator] = caseRoom.admin_power_level;
  }
  return {
    name: name.trim(),
    preset: caseRoom.preset as Preset,
    creation_content: { type: CASE_ROOM_TYPE },
    // The homeserver replaces (not merges) `events`, so the contract restates the usual levels.
    power_level_content_override: { events: { ...caseRoom.event_power_levels } as Record<string, number>, users },
    // End-to-end encrypted, its call's MatrixRTC slot open with per-member media keys.
    initial_state: caseRoom.initial_state.map((event) => ({ ...event })),
    invite: [service],
  };
}

/**
 * Creates a case room per design.md: room type org.koinos.case, call.member events allowed for
 * everyone (power level 0), the creator and control's service account at power level 100,
 * and the service account invited.
 */
export async function createCase(client: MatrixClient, name: string): Promise<string> {
  const request = caseRoomRequest(name, client.getSafeUserId(), await defaultRoomVersion(client));
  try {
    const { room_id } = await client.createRoom(request);
    return room_id;
  } catch (err) {
    throw new AppErrorException(toAppError(err));
  }
}
