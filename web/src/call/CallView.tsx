import { useState, useSyncExternalStore } from "react";
import type { Room as MatrixRoom } from "matrix-js-sdk";
import { Track, type Participant } from "livekit-client";
import { ErrorMessage } from "../errors/ErrorMessage";
import { appError, toAppError, type AppError } from "../errors/errors";
import type { CallController } from "./callController";
import { mayKick } from "./membershipTrust";
import { fallbackNotice, fallbackStageOf } from "./networkFallback";
import { matrixUserOf } from "./participantIdentity";
import { ParticipantTile, ScreenShareTile } from "./ParticipantTile";
import { DevicePickers } from "./DevicePickers";
import { maySetRecordingFlag, setRecordingFlag, useRecordingFlag } from "./recording";
import { displayNameOf } from "./useRtcSession";

function nameFor(room: MatrixRoom, p: Participant): string {
  const userId = matrixUserOf(p);
  if (userId) return displayNameOf(room, userId);
  return p.name || p.identity;
}

/**
 * A host may end the call for everyone: power level at least the room's kick level (the
 * creators of a room version 12+ room have unlimited power) — the rule control enforces.
 */
export function isHost(room: MatrixRoom, userId: string): boolean {
  return mayKick(room, userId);
}

interface Props {
  controller: CallController;
  onLeave: () => void;
  onEndForAll: () => void;
  /** Join again with the same devices, after the connection was lost for good. */
  onRejoin: () => void;
}

export function CallView({ controller, onLeave, onEndForAll, onRejoin }: Props) {
  const snap = useSyncExternalStore(controller.subscribe, controller.getSnapshot);
  const lk = controller.livekitRoom;
  const room = controller.matrixRoom;

  const participants: Participant[] = lk ? [lk.localParticipant, ...lk.remoteParticipants.values()] : [];
  const connected = snap.phase === "connected" && lk !== undefined;
  const micOn = lk?.localParticipant.isMicrophoneEnabled ?? false;
  const camOn = lk?.localParticipant.isCameraEnabled ?? false;
  const sharing = participants.filter((p) => {
    const pub = p.getTrackPublication(Track.Source.ScreenShare);
    return pub !== undefined && !pub.isMuted && pub.track !== undefined;
  });
  const count = Math.max(1, Math.min(participants.length + sharing.length, 6));
  const screenOn = lk?.localParticipant.isScreenShareEnabled ?? false;
  const canShareScreen = typeof navigator.mediaDevices?.getDisplayMedia === "function";
  const myUserId = controller.client.getUserId();
  const host = myUserId !== null && isHost(room, myUserId);
  const fallbackText = fallbackNotice(snap.fallback, snap.fallbackRecovered);
  const cameraPaused = snap.fallback === "camera";
  const recordingFlag = useRecordingFlag(room);
  // LiveKit's own recording (egress) counts too; it is read on every render (`revision`).
  const recording = recordingFlag || (lk?.isRecording ?? false);
  const mayFlagRecording = host && myUserId !== null && maySetRecordingFlag(room, myUserId);
  const [recordingBusy, setRecordingBusy] = useState(false);
  const [controlError, setControlError] = useState<AppError | undefined>();
  const toggleRecordingFlag = (): void => {
    setRecordingBusy(true);
    setControlError(undefined);
    setRecordingFlag(controller.client, room.roomId, !recordingFlag)
      .catch((err: unknown) => {
        console.warn("Could not change the recording flag", err);
        const cause = toAppError(err);
        setControlError(
          cause.category === "network" ? cause : appError(cause.category, "Could not change the recording flag. Please try again."),
        );
      })
      .finally(() => setRecordingBusy(false));
  };

  if (snap.phase === "disconnected") {
    // The LiveKit room is gone: no stale tiles or dead controls, only what happened and what next.
    return (
      <section className="call-view" aria-label="Call" data-testid="call_view" data-phase={snap.phase}>
        <div className="call-ended card" role="alert" data-testid="call_ended">
          <p className="call-status status-disconnected" data-testid="call_status" data-connection={snap.connection}>
            {snap.statusText}
          </p>
          <div className="call-controls">
            {snap.rejoinable && (
              <button type="button" className="primary" data-testid="rejoin_call" onClick={onRejoin}>
                Rejoin
              </button>
            )}
            <button type="button" data-testid="back_to_case" onClick={onLeave}>
              Back to the case
            </button>
          </div>
        </div>
      </section>
    );
  }

  return (
    <section className="call-view" aria-label="Call" data-testid="call_view" data-phase={snap.phase}>
      <p className={`call-status status-${snap.connection}`} role="status" data-testid="call_status" data-connection={snap.connection}>
        {snap.statusText}
      </p>
      {snap.encrypted && (
        <p className="e2ee-badge" role="note" data-testid="e2ee_badge" aria-label="This call is end-to-end encrypted">
          <span aria-hidden="true">🔒</span> End-to-end encrypted
        </p>
      )}
      {recording && (
        <p className="recording-badge" role="status" data-testid="recording_badge" aria-label="This call is being recorded">
          <span aria-hidden="true">●</span> Recording
        </p>
      )}
      <ErrorMessage error={snap.notice} testId="call_notice" />
      <ErrorMessage error={controlError} testId="control_error" />
      {fallbackText && (
        <p className={`fallback-notice${snap.fallback === "none" ? " recovered" : ""}`} role="status" data-testid="fallback_notice" data-stage={snap.fallback}>
          {fallbackText}
        </p>
      )}
      {snap.audioBlocked && (
        <button type="button" onClick={() => void controller.startAudio()}>
          Enable audio
        </button>
      )}
      <div className="tile-grid" data-count={count} data-testid="tiles">
        {sharing.map((p) => (
          <ScreenShareTile key={`screen-${p.identity}`} participant={p} displayName={nameFor(room, p)} isLocal={p === lk?.localParticipant} />
        ))}
        {participants.map((p) => (
          <ParticipantTile
            key={p.identity}
            participant={p}
            displayName={nameFor(room, p)}
            isLocal={p === lk?.localParticipant}
            audioOnly={fallbackStageOf(p) !== "none"}
          />
        ))}
      </div>
      {lk && <DevicePickers room={lk} disabled={!connected} onError={setControlError} />}
      <div className="call-controls" role="toolbar" aria-label="Call controls">
        <button
          type="button"
          data-testid="toggle_mic"
          aria-label={micOn ? "Mute microphone" : "Unmute microphone"}
          aria-pressed={!micOn}
          disabled={!connected}
          onClick={() => void controller.toggleMicrophone()}
        >
          {micOn ? "Mute" : "Unmute"}
        </button>
        <button
          type="button"
          data-testid="toggle_camera"
          aria-label={cameraPaused ? "Camera paused while your connection is weak" : camOn ? "Stop camera" : "Start camera"}
          aria-pressed={!camOn}
          disabled={!connected || cameraPaused}
          onClick={() => void controller.toggleCamera()}
        >
          {camOn ? "Stop camera" : "Start camera"}
        </button>
        <button
          type="button"
          data-testid="toggle_screen_share"
          aria-label={canShareScreen ? (screenOn ? "Stop sharing your screen" : "Share your screen") : "This browser cannot share its screen"}
          aria-pressed={screenOn}
          disabled={!connected || !canShareScreen}
          onClick={() => void controller.toggleScreenShare()}
        >
          {screenOn ? "Stop sharing" : "Share screen"}
        </button>
        <button type="button" className="danger" data-testid="leave_call" aria-label="Leave call" onClick={onLeave} disabled={snap.phase === "leaving"}>
          Leave call
        </button>
        {mayFlagRecording && (
          <button
            type="button"
            data-testid="toggle_recording_flag"
            aria-label={recordingFlag ? "Clear the recording flag" : "Flag the call as recorded"}
            aria-pressed={recordingFlag}
            disabled={recordingBusy}
            onClick={toggleRecordingFlag}
          >
            {recordingFlag ? "Clear recording flag" : "Flag as recorded"}
          </button>
        )}
        {host && (
          <button
            type="button"
            className="danger"
            data-testid="end_call"
            aria-label="End call for all"
            onClick={onEndForAll}
            disabled={!connected}
          >
            End call for all
          </button>
        )}
      </div>
    </section>
  );
}
