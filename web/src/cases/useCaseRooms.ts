import { useEffect, useState } from "react";
import { ClientEvent, RoomEvent, RoomStateEvent, type MatrixClient, type Room } from "matrix-js-sdk";
import { listJoinedCases } from "./caseRooms";

/** Joined case rooms, kept up to date as rooms are joined, left or renamed. */
export function useCaseRooms(client: MatrixClient): Room[] {
  const [rooms, setRooms] = useState<Room[]>(() => listJoinedCases(client));
  useEffect(() => {
    const refresh = (): void => setRooms(listJoinedCases(client));
    refresh();
    client.on(ClientEvent.Room, refresh);
    client.on(ClientEvent.DeleteRoom, refresh);
    client.on(RoomEvent.MyMembership, refresh);
    client.on(RoomEvent.Name, refresh);
    client.on(RoomStateEvent.Events, refresh);
    return () => {
      client.off(ClientEvent.Room, refresh);
      client.off(ClientEvent.DeleteRoom, refresh);
      client.off(RoomEvent.MyMembership, refresh);
      client.off(RoomEvent.Name, refresh);
      client.off(RoomStateEvent.Events, refresh);
    };
  }, [client]);
  return rooms;
}
