import { EventTimeline, EventType, type MatrixEvent, type Room } from "matrix-js-sdk";

/**
 * Which MatrixRTC call memberships the page believes.
 *
 * Room versions without MSC3757 (owned state keys) let any member who may send
 * `org.matrix.msc3401.call.member` write into any state key, and MatrixRTC clients attribute a
 * membership to its sender. So a member can put a fake membership into a colleague's slot, or
 * erase a colleague's real one with `{}`. The page believes a membership only when its sender is
 * the user its state key names (control clears fakes, see control's `membership.rs`), and does
 * not believe, for a short while, an erasure written by someone else who may not remove members
 * (power level below the room's kick level): the owner's client notices its membership is gone
 * and sends it again at once (matrix-js-sdk), so only a client that is really gone stays gone.
 * Erasures by those who may — a host ending the call, control's account clearing a ghost — are
 * believed, as control believes them.
 *
 * The state-key spellings are control's `state_key_owner` (`control/src/membership.rs`):
 * `_@user:server_DEVICE_m.call`, `@user:server_DEVICE`, `@user:server`; both are tested against
 * the cases of `proto/contract/call-member-state-keys.json`.
 */
export function stateKeyOwner(stateKey: string): string | undefined {
  const key = stateKey.startsWith("_") ? stateKey.slice(1) : stateKey;
  if (!key.startsWith("@")) return undefined;
  const colon = key.indexOf(":");
  if (colon < 2) return undefined;
  // A localpart has no ':'; a server name has no '_'.
  const server = key.slice(colon + 1).split("_")[0];
  if (!server) return undefined;
  return `${key.slice(0, colon)}:${server}`;
}

/**
 * Whether `userId` is known to have left the room (left, removed or banned). Their call
 * membership is void: their own leave is refused, so control clears it, and until then the page
 * does not show them. A member the page has not loaded is believed.
 */
export function hasLeftRoom(room: Pick<Room, "getMember">, userId: string): boolean {
  const membership = room.getMember(userId)?.membership;
  return membership !== undefined && membership !== "join";
}

/** How long an erasure by someone else is not believed (the owner's client re-sends at once). */
const ERASURE_DISBELIEF_MS = 60_000;

function callMemberEvents(room: Room): MatrixEvent[] {
  return room.getLiveTimeline().getState(EventTimeline.FORWARDS)?.getStateEvents(EventType.GroupCallMemberPrefix) ?? [];
}

/** Whether the membership of state event `eventId` was written by its slot's owner. */
export function isOwnMembership(room: Room, eventId: string): boolean {
  const event = callMemberEvents(room).find((e) => e.getId() === eventId);
  if (!event) return true;
  const owner = stateKeyOwner(event.getStateKey() ?? "");
  return owner === undefined || owner === event.getSender();
}

/** A membership someone else erased a moment ago, still believed: its owner and device. */
export interface ErasedMembership {
  userId: string;
  deviceId: string;
}

/** Whether `userId` may remove members from the room (a host, or control's account). */
export function mayKick(room: Room, userId: string): boolean {
  const level = room.getMember(userId)?.powerLevel ?? 0;
  return room.getLiveTimeline().getState(EventTimeline.FORWARDS)?.hasSufficientPowerLevelFor("kick", level) ?? false;
}

export function recentlyErasedByOthers(room: Room, now: number = Date.now()): ErasedMembership[] {
  const out: ErasedMembership[] = [];
  for (const event of callMemberEvents(room)) {
    const owner = stateKeyOwner(event.getStateKey() ?? "");
    const sender = event.getSender() ?? "";
    if (!owner || owner === sender) continue;
    if (mayKick(room, sender)) continue;
    if (Object.keys(event.getContent()).length > 0) continue;
    if (now - event.getTs() > ERASURE_DISBELIEF_MS) continue;
    const prev = event.getPrevContent() as { application?: unknown; device_id?: unknown };
    const prevSender = event.getUnsigned().prev_sender;
    if (prevSender !== owner || prev.application !== "m.call" || typeof prev.device_id !== "string") continue;
    out.push({ userId: owner, deviceId: prev.device_id });
  }
  return out;
}
