import {
  ClientEvent,
  HttpApiEvent,
  SyncState,
  createClient,
  type MatrixClient,
} from "matrix-js-sdk";
import { AppErrorException, MESSAGES, appError, isNetworkFailure, toAppError } from "../errors/errors";

/** What survives a reload (localStorage). */
export interface StoredSession {
  homeserverUrl: string;
  userId: string;
  accessToken: string;
  deviceId: string;
}

const STORAGE_KEY = "koinos-rtc.session";

function isStoredSession(value: unknown): value is StoredSession {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Record<string, unknown>;
  return (
    typeof v.homeserverUrl === "string" &&
    typeof v.userId === "string" &&
    typeof v.accessToken === "string" &&
    typeof v.deviceId === "string"
  );
}

/** Returns the saved session for this homeserver, if any. */
export function loadStoredSession(homeserverUrl: string): StoredSession | undefined {
  try {
    const raw = window.localStorage.getItem(STORAGE_KEY);
    if (!raw) return undefined;
    const parsed: unknown = JSON.parse(raw);
    if (!isStoredSession(parsed) || parsed.homeserverUrl !== homeserverUrl) return undefined;
    return parsed;
  } catch {
    return undefined;
  }
}

export function saveSession(session: StoredSession): void {
  window.localStorage.setItem(STORAGE_KEY, JSON.stringify(session));
}

export function clearStoredSession(): void {
  window.localStorage.removeItem(STORAGE_KEY);
}

/** The server name of a Matrix user id: everything after the first ':'. */
export function serverNameOf(userId: string): string {
  const i = userId.indexOf(":");
  return i >= 0 ? userId.slice(i + 1) : "";
}

/** Password login (m.login.password). Rejects with AppErrorException. */
export async function loginWithPassword(homeserverUrl: string, username: string, password: string): Promise<StoredSession> {
  const anon = createClient({ baseUrl: homeserverUrl });
  try {
    const res = await anon.loginRequest({
      type: "m.login.password",
      identifier: { type: "m.id.user", user: username.trim() },
      password,
      initial_device_display_name: "koinos-rtc web",
    });
    return {
      homeserverUrl,
      userId: res.user_id,
      accessToken: res.access_token,
      deviceId: res.device_id,
    };
  } catch (err) {
    if (isNetworkFailure(err)) throw new AppErrorException(appError("network", MESSAGES.network));
    const e = err as { errcode?: unknown; httpStatus?: unknown };
    if (e.errcode === "M_FORBIDDEN" || e.errcode === "M_INVALID_USERNAME" || e.httpStatus === 403 || e.httpStatus === 401) {
      throw new AppErrorException(appError("auth", MESSAGES.badLogin));
    }
    if (e.errcode === "M_USER_DEACTIVATED") {
      throw new AppErrorException(appError("auth", "This account has been deactivated."));
    }
    if (e.httpStatus === 429 || e.errcode === "M_LIMIT_EXCEEDED") {
      throw new AppErrorException(appError("unknown", MESSAGES.rateLimited));
    }
    throw new AppErrorException(toAppError(err));
  } finally {
    anon.stopClient();
  }
}

export function createSessionClient(session: StoredSession): MatrixClient {
  return createClient({
    baseUrl: session.homeserverUrl,
    accessToken: session.accessToken,
    userId: session.userId,
    deviceId: session.deviceId,
    timelineSupport: false,
  });
}

function cryptoDatabasePrefix(client: MatrixClient): string {
  return `koinos-rtc:${client.getUserId() ?? ""}:${client.getDeviceId() ?? ""}`;
}

/**
 * After signing out (the client stopped): this device's keys are of no use to anyone any more,
 * and are not left behind in the browser.
 */
export async function forgetDeviceStores(client: MatrixClient): Promise<void> {
  try {
    await client.clearStores({ cryptoDatabasePrefix: cryptoDatabasePrefix(client) });
  } catch (err) {
    console.warn("The signed-out device's stores could not be cleared", err);
  }
}

/**
 * Starts this device's end-to-end encryption (matrix-js-sdk's Rust crypto, its store in IndexedDB
 * per user and device): encrypted case rooms hand out the call's media keys in Olm-encrypted
 * to-device messages, which only a client with crypto can send or read. It must run before the
 * first sync, which would otherwise pass those messages by. A browser that cannot run it still
 * joins unencrypted cases; an encrypted call then refuses with its own error (mediaEncryption.ts).
 */
async function startCrypto(client: MatrixClient): Promise<void> {
  try {
    await client.initRustCrypto({ cryptoDatabasePrefix: cryptoDatabasePrefix(client) });
  } catch (err) {
    console.error("End-to-end encryption could not be started in this browser", err);
  }
}

/**
 * Starts encryption, then syncing, and resolves once the initial sync is PREPARED.
 * `onProgress` receives a sentence while the homeserver is unreachable (the SDK keeps retrying).
 * Rejects with an auth AppError if the stored token was revoked.
 */
export async function startAndWaitForSync(client: MatrixClient, onProgress: (message: string | undefined) => void): Promise<void> {
  await startCrypto(client);
  return new Promise<void>((resolve, reject) => {
    const cleanup = (): void => {
      client.off(ClientEvent.Sync, onSync);
      client.off(HttpApiEvent.SessionLoggedOut, onLoggedOut);
    };
    const onSync = (state: SyncState): void => {
      if (state === SyncState.Prepared || state === SyncState.Syncing) {
        if (!client.isInitialSyncComplete()) return;
        cleanup();
        onProgress(undefined);
        resolve();
      } else if (state === SyncState.Error || state === SyncState.Reconnecting) {
        onProgress(MESSAGES.network);
      }
    };
    const onLoggedOut = (): void => {
      cleanup();
      reject(new AppErrorException(appError("auth", MESSAGES.authExpired)));
    };
    client.on(ClientEvent.Sync, onSync);
    client.on(HttpApiEvent.SessionLoggedOut, onLoggedOut);
    client.startClient({ initialSyncLimit: 1, lazyLoadMembers: false }).catch((err: unknown) => {
      cleanup();
      reject(new AppErrorException(toAppError(err)));
    });
  });
}
