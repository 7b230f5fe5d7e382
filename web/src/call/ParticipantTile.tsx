import { useEffect, useRef, type RefObject } from "react";
import { ConnectionQuality, Track, type Participant, type RemoteTrackPublication, type TrackPublication } from "livekit-client";

interface Props {
  participant: Participant;
  displayName: string;
  isLocal: boolean;
  /** The gateway switched this participant to audio only because of its network. */
  audioOnly: boolean;
}

function usableTrack(pub: TrackPublication | undefined): Track | undefined {
  if (!pub || pub.isMuted) return undefined;
  return pub.track ?? undefined;
}

/** Plays `track` in the element behind `ref` for as long as both exist. */
export function useAttachedTrack(ref: RefObject<HTMLMediaElement | null>, track: Track | undefined): void {
  useEffect(() => {
    const el = ref.current;
    if (!el || !track) return;
    track.attach(el);
    return () => {
      track.detach(el);
    };
  }, [ref, track]);
}

const QUALITY: Record<ConnectionQuality, { bars: number; text: string }> = {
  [ConnectionQuality.Excellent]: { bars: 3, text: "excellent" },
  [ConnectionQuality.Good]: { bars: 2, text: "good" },
  [ConnectionQuality.Poor]: { bars: 1, text: "poor" },
  [ConnectionQuality.Lost]: { bars: 0, text: "lost" },
  [ConnectionQuality.Unknown]: { bars: 0, text: "not known yet" },
};

/**
 * LiveKit's view of this participant's connection (it scores each one from loss, jitter and
 * layers received), as signal bars. Unknown until the first score arrives, a few seconds in.
 */
function QualityIndicator({ quality }: { quality: ConnectionQuality }) {
  const { bars, text } = QUALITY[quality];
  return (
    <span
      className={`quality quality-${quality}`}
      data-testid="tile_quality"
      data-quality={quality}
      role="img"
      aria-label={`Connection ${text}`}
      title={`Connection ${text}`}
    >
      {[1, 2, 3].map((n) => (
        <span key={n} className={n <= bars ? "bar on" : "bar"} />
      ))}
    </span>
  );
}

export function ParticipantTile({ participant, displayName, isLocal, audioOnly }: Props) {
  const videoRef = useRef<HTMLVideoElement>(null);
  const audioRef = useRef<HTMLAudioElement>(null);

  const cameraPub = participant.getTrackPublication(Track.Source.Camera);
  const micPub = participant.getTrackPublication(Track.Source.Microphone);
  const videoTrack = usableTrack(cameraPub);
  // Never play our own microphone back.
  const audioTrack = isLocal ? undefined : (micPub?.track ?? undefined);
  const micMuted = !micPub || micPub.isMuted;
  const videoPaused =
    !isLocal && cameraPub !== undefined && (cameraPub as RemoteTrackPublication).track?.streamState === Track.StreamState.Paused;

  useAttachedTrack(videoRef, videoTrack);
  useAttachedTrack(audioRef, audioTrack);

  return (
    <figure
      className={`tile${participant.isSpeaking ? " speaking" : ""}${isLocal ? " local" : ""}`}
      data-testid="tile"
      data-identity={participant.identity}
      data-local={isLocal ? "true" : "false"}
      data-audio-only={audioOnly ? "true" : "false"}
      data-speaking={participant.isSpeaking ? "true" : "false"}
    >
      <video
        ref={videoRef}
        className={videoTrack ? "" : "hidden"}
        autoPlay
        playsInline
        muted={isLocal}
        aria-label={`Camera of ${displayName}`}
      />
      {!videoTrack && (
        <div className="avatar" aria-hidden="true">
          {displayName.replace(/^@/, "").charAt(0).toUpperCase()}
        </div>
      )}
      {!isLocal && <audio ref={audioRef} autoPlay />}
      <figcaption>
        <QualityIndicator quality={participant.connectionQuality} />
        <span className="tile-name">{isLocal ? `${displayName} (you)` : displayName}</span>
        {participant.isSpeaking && (
          <span className="speaking-indicator" data-testid="tile_speaking" role="img" aria-label="Speaking" title="Speaking" />
        )}
        {micMuted && <span className="badge" title="Microphone off">mic off</span>}
        {audioOnly && (
          <span className="badge warn" data-testid="tile_audio_only" title="Switched to audio only because of a weak connection">
            audio only
          </span>
        )}
        {videoPaused && !audioOnly && (
          <span className="badge warn" title="Video paused because of a poor connection">
            video paused
          </span>
        )}
      </figcaption>
    </figure>
  );
}

interface ScreenProps {
  participant: Participant;
  displayName: string;
  isLocal: boolean;
}

/** A participant's screen share: its own tile, never cropped, ahead of the camera tiles. */
export function ScreenShareTile({ participant, displayName, isLocal }: ScreenProps) {
  const videoRef = useRef<HTMLVideoElement>(null);
  const track = usableTrack(participant.getTrackPublication(Track.Source.ScreenShare));

  useAttachedTrack(videoRef, track);

  if (!track) return null;
  const label = isLocal ? "Your screen" : `${displayName}'s screen`;
  return (
    <figure className="tile screen" data-testid="screen_tile" data-identity={participant.identity} data-local={isLocal ? "true" : "false"}>
      <video ref={videoRef} autoPlay playsInline muted aria-label={label} />
      <figcaption>
        <span className="tile-name">{label}</span>
      </figcaption>
    </figure>
  );
}
