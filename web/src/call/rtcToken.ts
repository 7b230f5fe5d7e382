import type { IOpenIDToken } from "matrix-js-sdk";
import { AppErrorException, MESSAGES, appError, errorFromHttp } from "../errors/errors";

/** Body of `POST {rtc_service_url}/token` (control plane; unknown fields are rejected). */
export interface RtcTokenRequest {
  room_id: string;
  openid_token: {
    access_token: string;
    token_type: string;
    matrix_server_name: string;
    expires_in: number;
  };
  device_id: string;
}

/** 200 answer of `POST {rtc_service_url}/token`. */
export interface RtcTokenResponse {
  /** LiveKit signalling URL (the gateway). */
  url: string;
  jwt: string;
  livekit_room: string;
  identity: string;
  expires_at: number | string;
}

function isTokenResponse(value: unknown): value is RtcTokenResponse {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Record<string, unknown>;
  return typeof v.url === "string" && typeof v.jwt === "string" && typeof v.identity === "string";
}

function openIdBody(openId: IOpenIDToken): RtcTokenRequest["openid_token"] {
  return {
    access_token: openId.access_token,
    token_type: openId.token_type,
    matrix_server_name: openId.matrix_server_name,
    expires_in: openId.expires_in,
  };
}

/**
 * POSTs a JSON body to one of control's operations and returns the parsed 200 answer. Errors
 * are rejected as AppErrorException carrying a typed error (forbidden / full / auth / network /
 * unknown) built from control's Matrix-shaped `{errcode, error}`.
 */
async function postControl(rtcServiceUrl: string, operation: string, body: unknown, signal?: AbortSignal): Promise<unknown> {
  let res: Response;
  try {
    res = await fetch(`${rtcServiceUrl}/${operation}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
      signal: signal ?? null,
    });
  } catch (err) {
    if (err instanceof DOMException && err.name === "AbortError") throw err;
    throw new AppErrorException(appError("network", MESSAGES.network));
  }
  let payload: unknown = undefined;
  try {
    payload = await res.json();
  } catch {
    payload = undefined;
  }
  if (!res.ok) {
    const p = typeof payload === "object" && payload !== null ? (payload as Record<string, unknown>) : {};
    const errcode = typeof p.errcode === "string" ? p.errcode : undefined;
    const message = typeof p.error === "string" ? p.error : undefined;
    console.warn(`POST ${rtcServiceUrl}/${operation} answered ${res.status}`, payload);
    throw new AppErrorException(errorFromHttp(res.status, errcode, message));
  }
  return payload;
}

/** Exchanges a Matrix OpenID token for a LiveKit JWT. */
export async function requestRtcToken(
  rtcServiceUrl: string,
  roomId: string,
  deviceId: string,
  openId: IOpenIDToken,
  signal?: AbortSignal,
): Promise<RtcTokenResponse> {
  const body: RtcTokenRequest = { room_id: roomId, openid_token: openIdBody(openId), device_id: deviceId };
  const payload = await postControl(rtcServiceUrl, "token", body, signal);
  if (!isTokenResponse(payload)) {
    console.warn("Unexpected token response", payload);
    throw new AppErrorException(appError("unknown", "The call service sent an unexpected answer."));
  }
  return payload;
}

/**
 * Ends the case's call for everyone (`POST {rtc_service_url}/end`): control deletes the LiveKit
 * room and clears every call membership. Hosts only; control refuses anyone else with 403.
 */
export async function requestEndCall(rtcServiceUrl: string, roomId: string, openId: IOpenIDToken): Promise<void> {
  await postControl(rtcServiceUrl, "end", { room_id: roomId, openid_token: openIdBody(openId) });
}

/** 200 answer of `POST {rtc_service_url}/turn`: coturn REST-API credentials. */
interface TurnResponse {
  username: string;
  password: string;
  ttl: number;
  uris: string[];
}

function isTurnResponse(value: unknown): value is TurnResponse {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Record<string, unknown>;
  return (
    typeof v.username === "string" &&
    typeof v.password === "string" &&
    Array.isArray(v.uris) &&
    v.uris.length > 0 &&
    v.uris.every((u) => typeof u === "string")
  );
}

/** TURN credentials for this case's call, from control (members only), as an ICE server. */
export async function requestTurnServer(rtcServiceUrl: string, roomId: string, openId: IOpenIDToken): Promise<RTCIceServer> {
  const payload = await postControl(rtcServiceUrl, "turn", { room_id: roomId, openid_token: openIdBody(openId) });
  if (!isTurnResponse(payload)) {
    console.warn("Unexpected TURN response", payload);
    throw new AppErrorException(appError("unknown", "The call service sent an unexpected answer."));
  }
  return { urls: payload.uris, username: payload.username, credential: payload.password };
}
