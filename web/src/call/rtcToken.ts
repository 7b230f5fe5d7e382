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

/**
 * Exchanges a Matrix OpenID token for a LiveKit JWT. Errors are rejected as AppErrorException
 * carrying a typed error (forbidden / full / auth / network / unknown).
 */
export async function requestRtcToken(
  rtcServiceUrl: string,
  roomId: string,
  deviceId: string,
  openId: IOpenIDToken,
  signal?: AbortSignal,
): Promise<RtcTokenResponse> {
  const body: RtcTokenRequest = {
    room_id: roomId,
    openid_token: {
      access_token: openId.access_token,
      token_type: openId.token_type,
      matrix_server_name: openId.matrix_server_name,
      expires_in: openId.expires_in,
    },
    device_id: deviceId,
  };
  let res: Response;
  try {
    res = await fetch(`${rtcServiceUrl}/token`, {
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
    console.warn(`POST ${rtcServiceUrl}/token answered ${res.status}`, payload);
    throw new AppErrorException(errorFromHttp(res.status, errcode, message));
  }
  if (!isTokenResponse(payload)) {
    console.warn("Unexpected token response", payload);
    throw new AppErrorException(appError("unknown", "The call service sent an unexpected answer."));
  }
  return payload;
}
