import { useEffect, useRef, useState } from "react";
import {
  VideoPresets,
  createAudioAnalyser,
  createLocalAudioTrack,
  createLocalVideoTrack,
  type LocalAudioTrack,
  type LocalTrack,
  type LocalVideoTrack,
} from "livekit-client";
import { ErrorMessage } from "../errors/ErrorMessage";
import type { AppError } from "../errors/errors";
import { DeviceSelects, useMediaDevices, type DeviceKind } from "./DevicePickers";
import { loadMediaChoices, mediaErrorOf, saveMediaChoices, type CaptureKind, type MediaChoices } from "./mediaChoices";
import { useAttachedTrack } from "./ParticipantTile";
import type { CallParticipantInfo } from "./useRtcSession";

/**
 * The lobby between "Start/Join call" and the call (Element Call's and LiveKit Meet's pre-join):
 * a preview of the camera, a live microphone level, the three device pickers, and whether to go
 * in with microphone and camera on. The preview tracks are this view's own and stop when it
 * goes; the call opens the chosen devices again, so a cancelled lobby leaves nothing running.
 */

interface Preview<T> {
  track?: T;
  error?: AppError;
}

/** Opens a preview track while `enabled`, on `deviceId` (the default when undefined). */
function usePreviewTrack<T extends LocalTrack>(
  enabled: boolean,
  deviceId: string | undefined,
  kind: CaptureKind,
  open: (deviceId: string | undefined) => Promise<T>,
): Preview<T> {
  const request = `${enabled}:${deviceId ?? ""}`;
  const [result, setResult] = useState<{ request: string; preview: Preview<T> }>({ request: "", preview: {} });
  useEffect(() => {
    if (!enabled) return;
    let cancelled = false;
    let opened: T | undefined;
    open(deviceId).then(
      (track) => {
        if (cancelled) {
          track.stop();
          return;
        }
        opened = track;
        setResult({ request, preview: { track } });
      },
      (err: unknown) => {
        console.warn(`Could not open the ${kind} for the preview`, err);
        if (!cancelled) setResult({ request, preview: { error: mediaErrorOf(err, kind) } });
      },
    );
    return () => {
      cancelled = true;
      opened?.stop();
    };
  }, [enabled, deviceId, kind, open, request]);
  // A result for an earlier request (another device, or switched off) is not this one's.
  return enabled && result.request === request ? result.preview : {};
}

const openCamera = (deviceId: string | undefined): Promise<LocalVideoTrack> =>
  createLocalVideoTrack({ deviceId, resolution: VideoPresets.h720.resolution });
const openMicrophone = (deviceId: string | undefined): Promise<LocalAudioTrack> => createLocalAudioTrack({ deviceId });

/** The microphone's level, 0…1, sampled ten times a second. */
function useMicLevel(track: LocalAudioTrack | undefined): number {
  const [level, setLevel] = useState(0);
  useEffect(() => {
    if (!track) return;
    const analyser = createAudioAnalyser(track);
    const timer = setInterval(() => setLevel(analyser.calculateVolume()), 100);
    return () => {
      clearInterval(timer);
      void analyser.cleanup();
    };
  }, [track]);
  return track ? level : 0;
}

/** The device a preview track actually opened (the browser's default when none was chosen). */
function openedDevice(track: LocalTrack | undefined): string | undefined {
  return track?.mediaStreamTrack.getSettings().deviceId;
}

interface Props {
  /** A call is already running (joining it) or not (starting one). */
  running: boolean;
  /** Who is in it already. */
  participants: CallParticipantInfo[];
  onJoin: (choices: MediaChoices) => void;
  onCancel: () => void;
}

export function PreJoin({ running, participants, onJoin, onCancel }: Props) {
  const [choices, setChoices] = useState<MediaChoices>(loadMediaChoices);
  const camera = usePreviewTrack(choices.videoEnabled, choices.videoDeviceId, "camera", openCamera);
  const microphone = usePreviewTrack(choices.audioEnabled, choices.audioDeviceId, "microphone", openMicrophone);
  // Device labels are only readable once a capture was allowed: re-list when a preview opens.
  const devices = useMediaDevices(`${camera.track?.mediaStreamTrack.id}:${microphone.track?.mediaStreamTrack.id}`);
  const level = useMicLevel(microphone.track);
  const videoRef = useRef<HTMLVideoElement>(null);
  useAttachedTrack(videoRef, camera.track);

  const update = (patch: Partial<MediaChoices>): void => {
    setChoices((c) => {
      const next = { ...c, ...patch };
      saveMediaChoices(next);
      return next;
    });
  };
  const chosen: Record<DeviceKind, string | undefined> = {
    audioinput: choices.audioDeviceId ?? openedDevice(microphone.track),
    videoinput: choices.videoDeviceId ?? openedDevice(camera.track),
    audiooutput: choices.audioOutputDeviceId,
  };
  const choose = (kind: DeviceKind, deviceId: string): void => {
    if (kind === "audioinput") update({ audioDeviceId: deviceId });
    else if (kind === "videoinput") update({ videoDeviceId: deviceId });
    else update({ audioOutputDeviceId: deviceId });
  };
  const join = (): void => {
    // A device that could not be opened here would fail in the call too: go in without it.
    onJoin({
      ...choices,
      audioEnabled: choices.audioEnabled && microphone.error === undefined,
      videoEnabled: choices.videoEnabled && camera.error === undefined,
      audioDeviceId: chosen.audioinput,
      videoDeviceId: chosen.videoinput,
    });
  };
  const others = participants.map((p) => p.displayName);

  return (
    <section className="lobby card" aria-label="Before joining" data-testid="lobby">
      <h2>{running ? "Join the call" : "Start a call"}</h2>
      {others.length > 0 && <p data-testid="lobby_participants">In the call: {others.join(", ")}</p>}
      <div className="lobby-preview">
        {camera.track ? (
          <video ref={videoRef} data-testid="lobby_preview" aria-label="Your camera preview" autoPlay playsInline muted />
        ) : (
          <div className="lobby-preview-off" data-testid="lobby_preview_off">
            {choices.videoEnabled && !camera.error ? "Starting your camera…" : "Your camera is off"}
          </div>
        )}
      </div>
      <div className="lobby-mic">
        <span id="mic-level-label">Microphone</span>
        <meter
          aria-labelledby="mic-level-label"
          data-testid="mic_level"
          data-level={level.toFixed(3)}
          min={0}
          max={1}
          low={0.05}
          value={level}
        />
        {!choices.audioEnabled && <span className="device-note">You will join muted.</span>}
      </div>
      <ErrorMessage error={camera.error} testId="lobby_camera_error" />
      <ErrorMessage error={microphone.error} testId="lobby_microphone_error" />
      <DeviceSelects devices={devices} value={(kind) => chosen[kind]} disabled={false} onChange={(kind, _label, id) => choose(kind, id)} />
      <div className="call-controls" role="toolbar" aria-label="Join options">
        <button
          type="button"
          data-testid="lobby_toggle_mic"
          aria-label={choices.audioEnabled ? "Mute microphone" : "Unmute microphone"}
          aria-pressed={!choices.audioEnabled}
          onClick={() => update({ audioEnabled: !choices.audioEnabled })}
        >
          {choices.audioEnabled ? "Mute" : "Unmute"}
        </button>
        <button
          type="button"
          data-testid="lobby_toggle_camera"
          aria-label={choices.videoEnabled ? "Stop camera" : "Start camera"}
          aria-pressed={!choices.videoEnabled}
          onClick={() => update({ videoEnabled: !choices.videoEnabled })}
        >
          {choices.videoEnabled ? "Stop camera" : "Start camera"}
        </button>
        <button type="button" onClick={onCancel} data-testid="lobby_cancel">
          Cancel
        </button>
        <button type="button" className="primary" onClick={join} data-testid="lobby_join">
          Join now
        </button>
      </div>
    </section>
  );
}
