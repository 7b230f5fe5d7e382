import {
  ConnectionError,
  ConnectionErrorReason,
  DisconnectReason,
  Room,
  VideoPresets,
  type E2EEOptions,
} from "livekit-client";
import { MESSAGES, appError, type AppError } from "../errors/errors";
import { DEFAULT_CHOICES, type MediaChoices } from "./mediaChoices";
import { CallReconnectPolicy } from "./recovery";

/* The LiveKit room a call connects, and what its failures and endings mean to the practitioner. */

/**
 * Creates the LiveKit room with the options the gateway's 720/540/360 ladder relies on, capturing
 * from (and playing to) the devices chosen in the lobby.
 */
export function createLivekitRoom(choices: MediaChoices = DEFAULT_CHOICES, e2ee?: E2EEOptions): Room {
  return new Room({
    // `e2ee` rather than `encryption`, as Element Call: frames only, data packets in clear.
    ...(e2ee ? { e2ee } : {}),
    adaptiveStream: false,
    dynacast: true,
    reconnectPolicy: new CallReconnectPolicy(),
    publishDefaults: {
      videoSimulcastLayers: [VideoPresets.h360, VideoPresets.h540],
    },
    videoCaptureDefaults: {
      resolution: VideoPresets.h720.resolution,
      deviceId: choices.videoDeviceId,
    },
    audioCaptureDefaults: {
      deviceId: choices.audioDeviceId,
    },
    ...(choices.audioOutputDeviceId ? { audioOutput: { deviceId: choices.audioOutputDeviceId } } : {}),
  });
}

/** What ended the call for this page, in words, and whether joining again makes sense. */
export function disconnectOutcome(reason: DisconnectReason | undefined): { text: string; rejoinable: boolean } {
  switch (reason) {
    case DisconnectReason.PARTICIPANT_REMOVED:
      return { text: "You were removed from the call.", rejoinable: false };
    // Only control deletes a call's room: a host ended it for everyone.
    case DisconnectReason.ROOM_DELETED:
      return { text: "The host ended the call.", rejoinable: false };
    case DisconnectReason.ROOM_CLOSED:
      return { text: "The call was ended.", rejoinable: false };
    case DisconnectReason.DUPLICATE_IDENTITY:
      return { text: "You joined this call from another window.", rejoinable: false };
    // livekit-client gives up reconnecting without a reason (UNKNOWN_REASON).
    case undefined:
    case DisconnectReason.UNKNOWN_REASON:
    case DisconnectReason.JOIN_FAILURE:
    case DisconnectReason.SIGNAL_CLOSE:
    case DisconnectReason.STATE_MISMATCH:
    case DisconnectReason.CONNECTION_TIMEOUT:
    case DisconnectReason.MEDIA_FAILURE:
      return { text: "The connection to the call was lost.", rejoinable: true };
    default:
      return { text: "Disconnected from the call.", rejoinable: true };
  }
}

/** LiveKit refused the connection because the room does not exist (any more). */
export function isRoomGone(err: unknown): boolean {
  return (
    err instanceof ConnectionError &&
    ((err.reason === ConnectionErrorReason.NotAllowed && err.status === 404) ||
      /room does not exist/i.test(err.message))
  );
}

export function livekitConnectError(err: unknown): AppError {
  console.warn("LiveKit connect failed", err);
  if (err instanceof ConnectionError) {
    if (err.reason === ConnectionErrorReason.NotAllowed) {
      if (err.status === 403) return appError("forbidden", MESSAGES.forbidden);
      return appError("auth", "The media server refused the call token. Please try again.");
    }
    if (err.reason === ConnectionErrorReason.Cancelled) {
      return appError("unknown", "Connecting to the call was cancelled.");
    }
  }
  return appError("network", "Cannot reach the media server.");
}
