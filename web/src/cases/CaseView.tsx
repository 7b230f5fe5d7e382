import { useCallback, useEffect, useRef, useState } from "react";
import { ClientEvent, RoomEvent, type MatrixClient, type Room } from "matrix-js-sdk";
import { useSession } from "../auth/ClientContext";
import { CallController } from "../call/callController";
import { CallPanel } from "../call/CallPanel";
import { CallView } from "../call/CallView";
import type { MediaChoices } from "../call/mediaChoices";
import { PreJoin } from "../call/PreJoin";
import { useRtcSession } from "../call/useRtcSession";
import { toAppError, type AppError } from "../errors/errors";
import { isCaseRoom } from "./caseRooms";

/** The room if it is a case the user has joined; re-evaluated as sync brings changes. */
function useJoinedCase(client: MatrixClient, roomId: string): Room | undefined {
  const get = useCallback((): Room | undefined => {
    const room = client.getRoom(roomId);
    if (!room || room.getMyMembership() !== "join" || !isCaseRoom(room)) return undefined;
    return room;
  }, [client, roomId]);
  const [room, setRoom] = useState<Room | undefined>(get);
  useEffect(() => {
    const refresh = (): void => setRoom(get());
    refresh();
    client.on(ClientEvent.Room, refresh);
    client.on(RoomEvent.MyMembership, refresh);
    return () => {
      client.off(ClientEvent.Room, refresh);
      client.off(RoomEvent.MyMembership, refresh);
    };
  }, [client, get]);
  return room;
}

function useRoomName(room: Room): string {
  const [name, setName] = useState(room.name);
  useEffect(() => {
    const onName = (r: Room): void => setName(r.name);
    setName(room.name);
    room.on(RoomEvent.Name, onName);
    return () => {
      room.off(RoomEvent.Name, onName);
    };
  }, [room]);
  return name;
}

/** Why this user is not (or no longer) in the case, in words; undefined if it is unknown. */
function whyNotMember(client: MatrixClient, roomId: string): string | undefined {
  const room = client.getRoom(roomId);
  const userId = client.getUserId();
  if (!room || !userId) return undefined;
  const event = room.currentState.getStateEvents("m.room.member", userId);
  const membership = room.getMyMembership();
  const by = event?.getSender();
  const byName = by && by !== userId ? (room.getMember(by)?.name ?? by) : undefined;
  if (membership === "ban") return `You were banned from this case${byName ? ` by ${byName}` : ""}, so you are no longer in its call.`;
  if (membership === "leave" && byName) return `You were removed from this case by ${byName}, so you are no longer in its call.`;
  if (membership === "leave") return "You left this case.";
  return undefined;
}

export function CaseView({ roomId }: { roomId: string }) {
  const { client } = useSession();
  const room = useJoinedCase(client, roomId);
  if (!room) {
    return (
      <main className="case-view">
        <p role="alert" data-testid="case_missing">
          {whyNotMember(client, roomId) ?? "This case does not exist or you are not a member of it."}
        </p>
        <a href="#/">Back to cases</a>
      </main>
    );
  }
  return <CaseDetail room={room} />;
}

function CaseDetail({ room }: { room: Room }) {
  const { client, config, userId, deviceId } = useSession();
  const name = useRoomName(room);
  const rtc = useRtcSession(client, room, userId, deviceId);
  const [controller, setController] = useState<CallController | null>(null);
  const [inLobby, setInLobby] = useState(false);
  const [callError, setCallError] = useState<AppError | undefined>(undefined);
  const controllerRef = useRef<CallController | null>(null);
  controllerRef.current = controller;

  const openLobby = (): void => {
    setCallError(undefined);
    setInLobby(true);
  };

  const startCall = (choices: MediaChoices): void => {
    if (controllerRef.current) return;
    const c = new CallController(client, room, config, choices);
    setCallError(undefined);
    setInLobby(false);
    setController(c);
    c.start().catch((err: unknown) => {
      setCallError(toAppError(err));
      setController((cur) => (cur === c ? null : cur));
    });
  };

  const leaveCall = (): void => {
    const c = controllerRef.current;
    if (!c) return;
    void c.leave().finally(() => {
      setController((cur) => (cur === c ? null : cur));
    });
  };

  const rejoinCall = (): void => {
    const c = controllerRef.current;
    if (!c) return;
    const choices = c.choices;
    // The old attempt is already disconnected; its teardown only tidies up.
    void c.leave();
    controllerRef.current = null;
    setController(null);
    startCall(choices);
  };

  const endCallForAll = (): void => {
    const c = controllerRef.current;
    if (!c) return;
    if (!window.confirm("End the call for everyone in this case?")) return;
    void c.endForAll().then((ended) => {
      if (ended) setController((cur) => (cur === c ? null : cur));
    });
  };

  // Leave cleanly when the page goes away, and when this view unmounts (navigation, sign out).
  useEffect(() => {
    const onUnload = (): void => controllerRef.current?.leaveOnUnload();
    window.addEventListener("pagehide", onUnload);
    window.addEventListener("beforeunload", onUnload);
    return () => {
      window.removeEventListener("pagehide", onUnload);
      window.removeEventListener("beforeunload", onUnload);
      onUnload();
    };
  }, []);

  return (
    <main className="case-view" data-testid="case_view" data-room-id={room.roomId}>
      <nav>
        <a href="#/">← Cases</a>
      </nav>
      <h1 data-testid="case_name">{name}</h1>
      {controller ? (
        <CallView controller={controller} onLeave={leaveCall} onEndForAll={endCallForAll} onRejoin={rejoinCall} />
      ) : inLobby ? (
        <PreJoin running={rtc.othersInCall} participants={rtc.participants} onJoin={startCall} onCancel={() => setInLobby(false)} />
      ) : (
        <CallPanel rtc={rtc} error={callError} onStart={openLobby} />
      )}
    </main>
  );
}
