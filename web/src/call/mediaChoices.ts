import { MediaDeviceFailure } from "livekit-client";
import { appError, type AppError } from "../errors/errors";

/**
 * What the practitioner chose before joining (and changes in the call): which devices, and
 * whether to join with microphone and camera on. Remembered in this browser, as Element Call
 * and Jitsi do, so the next call starts the way the last one was left.
 */
export interface MediaChoices {
  audioEnabled: boolean;
  videoEnabled: boolean;
  audioDeviceId?: string;
  videoDeviceId?: string;
  audioOutputDeviceId?: string;
}

const STORAGE_KEY = "koinos.mediaChoices";

export const DEFAULT_CHOICES: MediaChoices = { audioEnabled: true, videoEnabled: true };

function optionalString(value: unknown): string | undefined {
  return typeof value === "string" && value !== "" ? value : undefined;
}

export function loadMediaChoices(): MediaChoices {
  try {
    const raw = window.localStorage.getItem(STORAGE_KEY);
    if (!raw) return { ...DEFAULT_CHOICES };
    const v = JSON.parse(raw) as Record<string, unknown>;
    return {
      audioEnabled: typeof v.audioEnabled === "boolean" ? v.audioEnabled : DEFAULT_CHOICES.audioEnabled,
      videoEnabled: typeof v.videoEnabled === "boolean" ? v.videoEnabled : DEFAULT_CHOICES.videoEnabled,
      audioDeviceId: optionalString(v.audioDeviceId),
      videoDeviceId: optionalString(v.videoDeviceId),
      audioOutputDeviceId: optionalString(v.audioOutputDeviceId),
    };
  } catch {
    // Private mode or a damaged entry: the defaults are a fine start.
    return { ...DEFAULT_CHOICES };
  }
}

export function saveMediaChoices(choices: MediaChoices): void {
  try {
    window.localStorage.setItem(STORAGE_KEY, JSON.stringify(choices));
  } catch {
    // Not remembered; nothing else depends on it.
  }
}

/** Remembers one device choice made in the call, keeping the rest. */
export function rememberDevice(kind: MediaDeviceKind, deviceId: string): void {
  const choices = loadMediaChoices();
  if (kind === "audioinput") choices.audioDeviceId = deviceId;
  else if (kind === "videoinput") choices.videoDeviceId = deviceId;
  else choices.audioOutputDeviceId = deviceId;
  saveMediaChoices(choices);
}

export type CaptureKind = "camera" | "microphone";

/** Why `getUserMedia` for a camera or microphone failed, as a sentence the practitioner can act on. */
export function mediaErrorOf(err: unknown, kind: CaptureKind): AppError {
  switch (MediaDeviceFailure.getFailure(err)) {
    case MediaDeviceFailure.PermissionDenied:
      return appError(
        "media",
        `Your browser does not allow this page to use your ${kind}. Allow it in the site settings (the icon at the left of the address bar), or join without it.`,
      );
    case MediaDeviceFailure.NotFound:
      return appError("media", `No ${kind} was found. Connect one, or join without it.`);
    case MediaDeviceFailure.DeviceInUse:
      return appError("media", `Your ${kind} is in use by another application or could not start. Close that application, or join without it.`);
    default:
      return appError("media", `Could not access your ${kind}.`);
  }
}
