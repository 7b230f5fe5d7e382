import { useEffect, useState } from "react";
import { RoomStateEvent, type MatrixClient, type Room } from "matrix-js-sdk";
import { MatrixRTCSessionEvent, type CallMembership, type MatrixRTCSession } from "matrix-js-sdk/lib/matrixrtc";

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

function describe(room: Room, memberships: CallMembership[], myUserId: string, myDeviceId: string): CallParticipantInfo[] {
  const seen = new Set<string>();
  const out: CallParticipantInfo[] = [];
  for (const m of memberships) {
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
    // Display names can change (or arrive late) independently of the call.
    const onMembers = (): void => setNamesRevision((n) => n + 1);
    room.on(RoomStateEvent.Members, onMembers);
    return () => {
      cancelled = true;
      session.off(MatrixRTCSessionEvent.MembershipsChanged, onChanged);
      room.off(RoomStateEvent.Members, onMembers);
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
