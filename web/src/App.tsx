import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { HttpApiEvent, type MatrixClient } from "matrix-js-sdk";
import { LoginView } from "./auth/LoginView";
import { SessionContext, type SessionContextValue } from "./auth/ClientContext";
import { SyncStatus } from "./auth/SyncStatus";
import {
  clearStoredSession,
  createSessionClient,
  forgetDeviceStores,
  loadStoredSession,
  loginWithPassword,
  saveSession,
  startAndWaitForSync,
  type StoredSession,
} from "./auth/session";
import { leaveAllCalls } from "./call/callController";
import { CaseList } from "./cases/CaseList";
import { CaseView } from "./cases/CaseView";
import { loadConfig, type AppConfig } from "./config/config";
import { MESSAGES, appError, toAppError, type AppError } from "./errors/errors";
import { navigate, useRoute } from "./router";

type AuthState =
  | { kind: "loading" }
  | { kind: "signed-out"; error?: AppError }
  | { kind: "syncing"; session: StoredSession; client: MatrixClient; progress?: string }
  | { kind: "ready"; session: StoredSession; client: MatrixClient };

export function App() {
  const [config, setConfig] = useState<AppConfig | undefined>(undefined);
  const [auth, setAuth] = useState<AuthState>({ kind: "loading" });
  const clientRef = useRef<MatrixClient | undefined>(undefined);

  const stopClient = useCallback((): void => {
    const c = clientRef.current;
    clientRef.current = undefined;
    c?.stopClient();
  }, []);

  const startSession = useCallback(
    async (session: StoredSession): Promise<void> => {
      stopClient();
      const client = createSessionClient(session);
      clientRef.current = client;
      setAuth({ kind: "syncing", session, client });
      try {
        await startAndWaitForSync(client, (progress) => {
          if (clientRef.current !== client) return;
          setAuth({ kind: "syncing", session, client, ...(progress ? { progress } : {}) });
        });
        if (clientRef.current !== client) return;
        setAuth({ kind: "ready", session, client });
      } catch (err) {
        if (clientRef.current !== client) return;
        const e = toAppError(err);
        stopClient();
        if (e.category === "auth") clearStoredSession();
        setAuth({ kind: "signed-out", error: e });
      }
    },
    [stopClient],
  );

  // Boot: runtime config, then the saved session if there is one.
  useEffect(() => {
    let cancelled = false;
    void loadConfig().then((cfg) => {
      if (cancelled) return;
      setConfig(cfg);
      const stored = loadStoredSession(cfg.homeserverUrl);
      if (stored) {
        void startSession(stored);
      } else {
        setAuth({ kind: "signed-out" });
      }
    });
    return () => {
      cancelled = true;
    };
  }, [startSession]);

  // A revoked token while signed in sends the user back to the login form.
  const client = auth.kind === "ready" ? auth.client : undefined;
  useEffect(() => {
    if (!client) return;
    const onLoggedOut = (): void => {
      stopClient();
      clearStoredSession();
      setAuth({ kind: "signed-out", error: appError("auth", MESSAGES.authExpired) });
    };
    client.on(HttpApiEvent.SessionLoggedOut, onLoggedOut);
    return () => {
      client.off(HttpApiEvent.SessionLoggedOut, onLoggedOut);
    };
  }, [client, stopClient]);

  const login = useCallback(
    async (username: string, password: string): Promise<void> => {
      if (!config) return;
      try {
        const session = await loginWithPassword(config.homeserverUrl, username, password);
        saveSession(session);
        await startSession(session);
      } catch (err) {
        setAuth({ kind: "signed-out", error: toAppError(err) });
      }
    },
    [config, startSession],
  );

  const signOut = useCallback(async (): Promise<void> => {
    const c = clientRef.current;
    // Leave any running call while the access token is still valid.
    await leaveAllCalls();
    // From here on, what this client reports (its sync stopping, perhaps before it ever
    // finished) no longer changes the screen.
    clientRef.current = undefined;
    setAuth({ kind: "signed-out" });
    navigate("#/");
    clearStoredSession();
    if (c) {
      try {
        await c.logout(true);
      } catch (err) {
        console.warn("Logout request failed", err);
      }
      c.stopClient();
      await forgetDeviceStores(c);
    }
  }, []);

  const sessionValue = useMemo<SessionContextValue | null>(() => {
    if (auth.kind !== "ready" || !config) return null;
    return { client: auth.client, config, userId: auth.session.userId, deviceId: auth.session.deviceId };
  }, [auth, config]);

  if (auth.kind === "loading" || !config) {
    return <p className="boot">Loading…</p>;
  }
  if (auth.kind === "signed-out") {
    return <LoginView onSubmit={login} error={auth.error} />;
  }
  return (
    <div className="app">
      <header className="app-header">
        <a className="brand" href="#/">
          koinos-rtc
        </a>
        <span className="whoami" data-testid="whoami">
          {auth.session.userId}
        </span>
        <button type="button" className="secondary" onClick={() => void signOut()}>
          Sign out
        </button>
      </header>
      {auth.kind === "syncing" || !sessionValue ? (
        <main>
          <p role="status">{auth.kind === "syncing" && auth.progress ? auth.progress : "Loading your cases…"}</p>
        </main>
      ) : (
        <SessionContext.Provider value={sessionValue}>
          <SyncStatus client={sessionValue.client} />
          <Routed />
        </SessionContext.Provider>
      )}
    </div>
  );
}

function Routed() {
  const route = useRoute();
  if (route.name === "case") return <CaseView key={route.roomId} roomId={route.roomId} />;
  return <CaseList />;
}
