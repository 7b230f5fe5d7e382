import { useCallback, useSyncExternalStore } from "react";
import { RoomStateEvent, type MatrixClient, type Room as MatrixRoom } from "matrix-js-sdk";

/**
 * The case room's recording flag: a state event (empty state key) whose content is
 * `{"active": true}` while the call is to be treated as recorded. Nothing is recorded by us; it
 * is a flag hosts set so that everyone in the call sees a "Recording" badge. Who may set it is
 * the room's power levels (the state-event default, which practitioners do not reach).
 */
export const RECORDING_EVENT = "org.koinos.call.recording";

export function recordingFlagOf(room: MatrixRoom): boolean {
  const event = room.currentState.getStateEvents(RECORDING_EVENT, "");
  return event?.getContent<{ active?: unknown }>().active === true;
}

export function maySetRecordingFlag(room: MatrixRoom, userId: string): boolean {
  return room.currentState.maySendStateEvent(RECORDING_EVENT, userId);
}

export async function setRecordingFlag(client: MatrixClient, roomId: string, active: boolean): Promise<void> {
  // The SDK's typed state-event map does not know our type; the content is plain JSON.
  await client.sendStateEvent(roomId, RECORDING_EVENT as never, { active } as never, "");
}

/** The flag as the room's state says now, re-read whenever the room's state changes. */
export function useRecordingFlag(room: MatrixRoom): boolean {
  const subscribe = useCallback(
    (onChange: () => void) => {
      room.on(RoomStateEvent.Events, onChange);
      return () => {
        room.off(RoomStateEvent.Events, onChange);
      };
    },
    [room],
  );
  return useSyncExternalStore(subscribe, () => recordingFlagOf(room));
}
