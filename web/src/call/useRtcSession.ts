import { useEffect, useState } from "react";
import { RoomStateEvent, type MatrixClient, type Room } from "matrix-js-sdk";
import { MatrixRTCSessionEvent, type CallMembership, type MatrixRTCSession } from "matrix-js-sdk/lib/matrixrtc";
import { hasLeftRoom, isOwnMembership, recentlyErasedByOthers } from "./membershipTrust";

export interface CallParticipantInfo {
  /** `<user_id>:<device_id>`, also the LiveKit identity of that device. */
  key: string;
  userId: string;
  deviceId: string;
  displayName: string;
  isMe: boolean;
}

export interface RtcSessionState {
  session: MatrixRTCSession;
  /** False until the session's initial membership calculation is done. */
  ready: boolean;
  memberships: CallMembership[];
  participants: CallParticipantInfo[];
  /** Someone other than this device is in the call. */
  othersInCall: boolean;
  /** This very device has a (possibly stale) membership. */
  meInCall: boolean;
}

export function displayNameOf(room: Room, userId: string): string {
  return room.getMember(userId)?.name ?? userId;
}

/**
 * Who is in the call: the memberships the page believes (see `membershipTrust.ts`): none
 * written into someone else's slot, none of someone who has left the case room, and a
 * colleague's membership someone else just erased still counted.
 */
function describe(room: Room, memberships: CallMembership[], myUserId: string, myDeviceId: string): CallParticipantInfo[] {
  const seen = new Set<string>();
  const out: CallParticipantInfo[] = [];
  const believed = memberships
    .filter((m) => isOwnMembership(room, m.eventId))
    .map((m) => ({ userId: m.userId, deviceId: m.deviceId }));
  for (const m of [...believed, ...recentlyErasedByOthers(room)]) {
    if (hasLeftRoom(room, m.userId)) continue;
    const key = `${m.userId}:${m.deviceId}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({
      key,
      userId: m.userId,
      deviceId: m.deviceId,
      displayName: displayNameOf(room, m.userId),
      isMe: m.userId === myUserId && m.deviceId === myDeviceId,
    });
  }
  return out;
}

/** Live view of the room's MatrixRTC call (Element Call "m.call" slot) via client.matrixRTC. */
export function useRtcSession(client: MatrixClient, room: Room, myUserId: string, myDeviceId: string): RtcSessionState {
  const session = client.matrixRTC.getRoomSession(room);
  const [memberships, setMemberships] = useState<CallMembership[]>(() => session.memberships);
  const [ready, setReady] = useState(false);
  const [, setNamesRevision] = useState(0);

  useEffect(() => {
    let cancelled = false;
    const onChanged = (_old: CallMembership[], now: CallMembership[]): void => {
      setMemberships(now);
    };
    session.on(MatrixRTCSessionEvent.MembershipsChanged, onChanged);
    setMemberships(session.memberships);
    const settle = (): void => {
      if (cancelled) return;
      setMemberships(session.memberships);
      setReady(true);
    };
    session.initialMembershipCalculated.then(settle, (err: unknown) => {
      console.warn("Could not compute call memberships", err);
      settle();
    });
    // Display names can change (or arrive late) independently of the call; an erasure by
    // someone else is believed after a while (see membershipTrust.ts).
    const onMembers = (): void => setNamesRevision((n) => n + 1);
    room.on(RoomStateEvent.Members, onMembers);
    const recheck = window.setInterval(onMembers, 10_000);
    return () => {
      cancelled = true;
      session.off(MatrixRTCSessionEvent.MembershipsChanged, onChanged);
      room.off(RoomStateEvent.Members, onMembers);
      window.clearInterval(recheck);
    };
  }, [session, room]);

  const participants = describe(room, memberships, myUserId, myDeviceId);
  return {
    session,
    ready,
    memberships,
    participants,
    othersInCall: participants.some((p) => !p.isMe),
    meInCall: participants.some((p) => p.isMe),
  };
}
