import { useEffect, useState } from "react";
import { ClientEvent, SyncState, type MatrixClient } from "matrix-js-sdk";

/**
 * Whether the homeserver can be reached, once signed in. matrix-js-sdk keeps retrying on its own;
 * this only says so, because case views and the call list go stale meanwhile while a running
 * call (LiveKit) carries on.
 */
export function SyncStatus({ client }: { client: MatrixClient }) {
  const [unreachable, setUnreachable] = useState(() => isUnreachable(client.getSyncState()));
  useEffect(() => {
    const onSync = (state: SyncState): void => setUnreachable(isUnreachable(state));
    client.on(ClientEvent.Sync, onSync);
    return () => {
      client.off(ClientEvent.Sync, onSync);
    };
  }, [client]);
  if (!unreachable) return null;
  return (
    <p className="sync-status" role="status" data-testid="homeserver_unreachable">
      Cannot reach the server. Retrying… Cases and who is in a call will update when it is back; a call in progress carries on.
    </p>
  );
}

function isUnreachable(state: SyncState | null): boolean {
  return state === SyncState.Error || state === SyncState.Reconnecting;
}
