/**
 * Runtime configuration, served by the control plane as `/config.json` on the page's origin.
 * When it cannot be fetched (or is malformed) the dev-stack defaults are used.
 */
export interface AppConfig {
  /** Client-server API base URL of the Matrix homeserver. */
  homeserverUrl: string;
  /** MatrixRTC transport base (`livekit_service_url`); `POST {rtcServiceUrl}/token` mints LiveKit JWTs. */
  rtcServiceUrl: string;
}

export const DEFAULT_HOMESERVER_URL = "http://localhost:8008";

export function defaultConfig(): AppConfig {
  return {
    homeserverUrl: DEFAULT_HOMESERVER_URL,
    rtcServiceUrl: `${window.location.origin}/api/rtc`,
  };
}

function nonEmptyString(value: unknown): string | undefined {
  return typeof value === "string" && value.trim() !== "" ? value.trim() : undefined;
}

function stripTrailingSlash(url: string): string {
  return url.replace(/\/+$/, "");
}

/** Parses the wire shape `{homeserver_url, rtc_service_url}`; missing fields fall back to defaults. */
export function parseConfig(raw: unknown): AppConfig {
  const defaults = defaultConfig();
  const obj = typeof raw === "object" && raw !== null ? (raw as Record<string, unknown>) : {};
  return {
    homeserverUrl: stripTrailingSlash(nonEmptyString(obj.homeserver_url) ?? defaults.homeserverUrl),
    rtcServiceUrl: stripTrailingSlash(nonEmptyString(obj.rtc_service_url) ?? defaults.rtcServiceUrl),
  };
}

export async function loadConfig(): Promise<AppConfig> {
  try {
    const res = await fetch("/config.json", { cache: "no-store", headers: { Accept: "application/json" } });
    if (!res.ok) {
      console.warn(`/config.json answered ${res.status}; using defaults`);
      return defaultConfig();
    }
    return parseConfig(await res.json());
  } catch (err) {
    console.warn("Could not load /config.json; using defaults", err);
    return defaultConfig();
  }
}
