/**
 * Typed errors shown to the user. Every failure the page can surface is mapped to one
 * of these categories plus a human sentence; raw exceptions never reach the screen.
 */
export type ErrorCategory = "auth" | "forbidden" | "network" | "media" | "full" | "unknown";

export interface AppError {
  category: ErrorCategory;
  /** A complete, human-readable sentence. */
  message: string;
}

export const MESSAGES = {
  network: "Cannot reach the server.",
  forbidden: "You are not a member of this case.",
  full: "This call is full (6 participants).",
  authExpired: "Your session has expired. Please sign in again.",
  badLogin: "Wrong username or password.",
  rateLimited: "Too many requests. Please wait a moment and try again.",
  unavailable: "The call service is temporarily unavailable. Please try again shortly.",
  media: "Could not access your camera or microphone.",
  unknown: "Something went wrong. Please try again.",
} as const;

export function appError(category: ErrorCategory, message: string): AppError {
  return { category, message };
}

/** Thrown (rejected) by our own code paths so callers can keep the typed error. */
export class AppErrorException extends Error {
  readonly appError: AppError;
  constructor(err: AppError) {
    super(err.message);
    this.name = "AppErrorException";
    this.appError = err;
  }
}

export function isAppError(value: unknown): value is AppError {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Record<string, unknown>;
  return typeof v.category === "string" && typeof v.message === "string" && !(value instanceof Error);
}

interface MatrixLikeError {
  errcode?: unknown;
  httpStatus?: unknown;
  name?: unknown;
  message?: unknown;
  data?: unknown;
}

function asRecord(value: unknown): MatrixLikeError | undefined {
  return typeof value === "object" && value !== null ? value : undefined;
}

/** True for fetch/XHR failures where no HTTP answer arrived at all. */
export function isNetworkFailure(err: unknown): boolean {
  const e = asRecord(err);
  if (!e) return false;
  // matrix-js-sdk wraps fetch failures in ConnectionError; fetch itself throws TypeError.
  if (e.name === "ConnectionError") return true;
  if (err instanceof TypeError) return true;
  return false;
}

/**
 * Maps an HTTP status + Matrix errcode (as returned by control's REST API or by the homeserver)
 * to a typed error.
 */
export function errorFromHttp(status: number, errcode: string | undefined, serverMessage?: string): AppError {
  // Control answers a full call with 409 + M_LIMIT_EXCEEDED; 429 is plain rate limiting.
  if (status === 409 || (errcode === "M_LIMIT_EXCEEDED" && status !== 429)) {
    return appError("full", MESSAGES.full);
  }
  if (status === 403 || errcode === "M_FORBIDDEN") {
    return appError("forbidden", MESSAGES.forbidden);
  }
  if (status === 401 || errcode === "M_UNAUTHORIZED" || errcode === "M_UNKNOWN_TOKEN" || errcode === "M_MISSING_TOKEN") {
    return appError("auth", MESSAGES.authExpired);
  }
  if (status === 429) {
    return appError("unknown", MESSAGES.rateLimited);
  }
  if (status === 400 || status === 413) {
    const detail = serverMessage ? ` (${serverMessage})` : "";
    return appError("unknown", `The server rejected the request${detail}.`);
  }
  if (status === 503 || errcode === "M_UNAVAILABLE") {
    return appError("network", MESSAGES.unavailable);
  }
  if (status >= 500 || status === 0) {
    return appError("network", MESSAGES.network);
  }
  return appError("unknown", MESSAGES.unknown);
}

/** Best-effort mapping of anything thrown to an AppError. */
export function toAppError(err: unknown): AppError {
  if (err instanceof AppErrorException) return err.appError;
  if (isAppError(err)) return err;
  if (isNetworkFailure(err)) return appError("network", MESSAGES.network);
  const e = asRecord(err);
  if (e && typeof e.httpStatus === "number") {
    const errcode = typeof e.errcode === "string" ? e.errcode : undefined;
    return errorFromHttp(e.httpStatus, errcode);
  }
  if (err instanceof DOMException) {
    if (err.name === "NotAllowedError" || err.name === "NotFoundError" || err.name === "NotReadableError" || err.name === "OverconstrainedError") {
      return appError("media", MESSAGES.media);
    }
  }
  return appError("unknown", MESSAGES.unknown);
}
