import type { ReconnectContext, ReconnectPolicy } from "livekit-client";
import type { AppError } from "../errors/errors";

/**
 * How the page gets a call back after the media server went away (restarted, crashed, its node
 * lost), in two stages:
 *
 * 1. livekit-client's own reconnection (resume, then a full reconnect with the same ticket), but
 *    retried often and for a short while only: it cannot succeed once LiveKit has lost the room,
 *    since only control re-creates rooms;
 * 2. then the page re-joins by itself: a fresh ticket from control (which re-creates the room),
 *    a new LiveKit connection with the same devices and mute state, the MatrixRTC membership
 *    kept throughout. It stops at once when rejoining cannot help (no longer a member, signed
 *    out) and otherwise after `REJOIN_FOR_MS`, with the reason.
 *
 * Policies only; `callController.ts` does the I/O.
 */

/** How long livekit-client keeps resuming before the page re-joins on its own. */
export const RESUME_FOR_MS = 12_000;

/** How long the page keeps re-joining before it says the call was lost (and offers Rejoin). */
export const REJOIN_FOR_MS = 60_000;

/**
 * livekit-client's retries: soon and steady (every second at most) so that a media server back
 * after a restart is found within a second, for `RESUME_FOR_MS`.
 */
export class CallReconnectPolicy implements ReconnectPolicy {
  nextRetryDelayInMs(context: ReconnectContext): number | null {
    if (context.elapsedMs >= RESUME_FOR_MS) return null;
    if (context.retryCount === 0) return Math.random() * 300;
    return Math.min(1_000, 300 * context.retryCount) * (0.8 + Math.random() * 0.4);
  }
}

/** Wait before re-join attempt `attempt` (0-based): at once, then growing to 3 s, with jitter. */
export function rejoinDelayMs(attempt: number): number {
  if (attempt === 0) return 0;
  const base = [500, 1_000, 2_000][attempt - 1] ?? 3_000;
  return base * (0.8 + Math.random() * 0.4);
}

/** How long a first join waits for a call service that is away (control or LiveKit restarting). */
export const JOIN_RETRY_FOR_MS = 60_000;

/** Whether a first join tries again after this error: only when the service was unreachable. */
export function joinIsRetryable(error: AppError): boolean {
  return error.category === "network";
}

/** A refusal that another attempt cannot change: the page stops re-joining at once. */
export function rejoinIsHopeless(error: AppError): boolean {
  return error.category === "forbidden" || error.category === "auth";
}

/** What the practitioner is told when the page stops trying. */
export function rejoinGaveUpText(error: AppError | undefined): string {
  if (error?.category === "forbidden") return "You are no longer a member of this case, so you left the call.";
  if (error?.category === "auth") return error.message;
  return "The connection to the call was lost.";
}
