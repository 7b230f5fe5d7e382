import { RoomEvent as MatrixRoomEvent, type MatrixClient, type MatrixEvent, type Room as MatrixRoom, type IRoomTimelineData } from "matrix-js-sdk";
import {
  MatrixRTCSessionEvent,
  type LivekitTransport,
  type MatrixRTCSession,
} from "matrix-js-sdk/lib/matrixrtc";
import { ConnectionState, RoomEvent, Track, type DisconnectReason, type Room } from "livekit-client";
import type { AppConfig } from "../config/config";
import { AppErrorException, MESSAGES, appError, toAppError, type AppError } from "../errors/errors";
import { DEFAULT_CHOICES, mediaErrorOf, type MediaChoices } from "./mediaChoices";
import { LINK_LOST_AFTER_MS, MediaWatch } from "./mediaWatch";
import { fallbackStageOf, type FallbackStage } from "./networkFallback";
import {
  JOIN_RETRY_FOR_MS,
  REJOIN_FOR_MS,
  joinIsRetryable,
  rejoinDelayMs,
  rejoinGaveUpText,
  rejoinIsHopeless,
} from "./recovery";
import { createLivekitRoom, disconnectOutcome, isRoomGone, livekitConnectError } from "./livekitRoom";
import { CallMediaKeys, callIsEncrypted } from "./mediaEncryption";
import { mayKick } from "./membershipTrust";
import { requestEndCall, requestRtcToken, requestTurnServer } from "./rtcToken";
import matrixContract from "../../../proto/contract/matrix.json";

/**
 * What control sends into the case room when a host ends the call for everyone (the shared
 * contract, `proto/contract/matrix.json`). The homeserver's record of the end: it reaches the
 * page while the media server is away, when no LiveKit room is there to be deleted.
 */
export const CALL_ENDED_EVENT: string = matrixContract.events.call_ended;

const SCREEN_SHARE_STOPPED = "Your screen share stopped while the call reconnected. Share your screen again to show it.";

declare global {
  interface Window {
    /**
     * Test hook: the LiveKit Room of the active call, `undefined` when not in a call.
     * Documented in web/README.md; used by the Playwright tests to inspect tracks and stats.
     */
    __koinosRoom?: Room;
  }
}

export type CallPhase = "joining" | "connected" | "disconnected" | "leaving" | "left" | "failed";

/** `interrupted`: connected, but the others' sound and picture stopped arriving (mediaWatch.ts). */
export type ConnectionStatus = "connecting" | "connected" | "interrupted" | "reconnecting" | "reconnected" | "disconnected";

export interface CallSnapshot {
  phase: CallPhase;
  connection: ConnectionStatus;
  /** Human sentence for the status line. */
  statusText: string;
  /** A non-fatal problem to show in the call view (e.g. camera unavailable). */
  notice?: AppError;
  /** Fatal error when phase === "failed". */
  error?: AppError;
  /** Whether the browser blocked audio playback (needs a click to start). */
  audioBlocked: boolean;
  /** How far the gateway has switched this participant to audio only because of its network. */
  fallback: FallbackStage;
  /** Video came back after a fallback (shown briefly). */
  fallbackRecovered: boolean;
  /** After a disconnect: whether joining again makes sense (the connection was lost, not ended). */
  rejoinable: boolean;
  /** Whether the call's media is end-to-end encrypted (the case room is). */
  encrypted: boolean;
  /** Bumped whenever anything about the LiveKit room changed (participants, tracks, mutes). */
  revision: number;
}

/** Settles when every MatrixRTC leave this page started has gone out. */
let pendingRtcLeave: Promise<void> = Promise.resolve();

/** Controllers with a call in progress (at most one in practice), so sign-out can leave first. */
const activeCalls = new Set<CallController>();

/** Leaves every call in progress (used before signing out, while the access token still works). */
export async function leaveAllCalls(): Promise<void> {
  await Promise.all([...activeCalls].map((c) => c.leave()));
}

/**
 * One call attempt in one case room: joins the MatrixRTC session (Element Call semantics),
 * fetches a LiveKit token from the control plane, connects LiveKit and publishes mic + camera.
 * Framework-free; React subscribes through `subscribe`/`getSnapshot`.
 */
export class CallController {
  readonly client: MatrixClient;
  readonly matrixRoom: MatrixRoom;
  readonly session: MatrixRTCSession;
  private readonly config: AppConfig;
  private lkRoom: Room | undefined;
  /** The call's media keys, when the case room is encrypted (mediaEncryption.ts). */
  private mediaKeys: CallMediaKeys | undefined;
  private snapshot: CallSnapshot = {
    phase: "joining",
    connection: "connecting",
    statusText: "Joining the call…",
    audioBlocked: false,
    fallback: "none",
    fallbackRecovered: false,
    rejoinable: false,
    encrypted: false,
    revision: 0,
  };
  /** The gateway paused our camera (fallback stage "camera") while it was on: turn it back on after. */
  private cameraPausedByNetwork = false;
  private recoveredTimer: ReturnType<typeof setTimeout> | undefined;
  private reconnectedTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly listeners = new Set<() => void>();
  private leaving = false;
  private rtcJoined = false;
  private started = false;
  /** When `start()` was called (this browser's clock). */
  private startedAt = 0;
  private readonly mediaWatch = new MediaWatch();
  /** Whether our connection to the media server still carries anything (mediaWatch.ts). */
  private readonly linkWatch = new MediaWatch(LINK_LOST_AFTER_MS);
  private mediaTimer: ReturnType<typeof setInterval> | undefined;
  private sampling = false;
  /** This page's host is ending the call for everyone (a request to control in flight). */
  private endingForAll = false;
  /** The page is re-joining by itself after the media server lost the call (recovery.ts). */
  private rejoining = false;
  /** ICE servers fetched with the first join, reused by the page's own re-joins. */
  private iceConfig: Promise<RTCConfiguration> | undefined;
  /** Whether the practitioner wants microphone and camera on (kept across a re-join). */
  private micWanted: boolean;
  private cameraWanted: boolean;
  /**
   * Whether the practitioner is sharing a screen. A re-join cannot share it again by itself
   * (browsers ask for a click before every capture), so it tells them instead.
   */
  private screenWanted = false;

  /** What this call was joined with (a rejoin reuses it). */
  readonly choices: MediaChoices;

  constructor(client: MatrixClient, matrixRoom: MatrixRoom, config: AppConfig, choices: MediaChoices = DEFAULT_CHOICES) {
    this.client = client;
    this.matrixRoom = matrixRoom;
    this.config = config;
    this.choices = choices;
    this.micWanted = choices.audioEnabled;
    this.cameraWanted = choices.videoEnabled;
    this.session = client.matrixRTC.getRoomSession(matrixRoom);
  }

  get livekitRoom(): Room | undefined {
    return this.lkRoom;
  }

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  };

  getSnapshot = (): CallSnapshot => this.snapshot;

  private update(patch: Partial<CallSnapshot>): void {
    this.snapshot = { ...this.snapshot, ...patch, revision: this.snapshot.revision + 1 };
    for (const l of this.listeners) l();
  }

  private bump = (): void => {
    this.update({});
  };

  /** The MatrixRTC transport this client advertises (`foci_preferred[0]`). */
  private transport(): LivekitTransport {
    return {
      type: "livekit",
      livekit_service_url: this.config.rtcServiceUrl,
      livekit_alias: this.matrixRoom.roomId,
    };
  }

  private onMembershipManagerError = (error: unknown): void => {
    console.error("MatrixRTC membership manager failed", error);
    this.update({
      notice: appError("network", "Your presence in the call could not be kept up to date in the case room."),
    });
  };

  /** Starts (or joins) the call. Resolves when connected; rejects with AppErrorException on failure. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.startedAt = Date.now();
    activeCalls.add(this);
    try {
      // (a) MatrixRTC membership. With js-sdk 43 the "multi-SFU focus" argument is the transport we
      // publish to: the membership event gets focus_active {type:"livekit", focus_selection:"multi_sfu"}
      // and foci_preferred [this transport], which is the design's wire contract.
      await pendingRtcLeave;
      this.throwIfLeaving();
      this.session.on(MatrixRTCSessionEvent.MembershipManagerError, this.onMembershipManagerError);
      this.matrixRoom.on(MatrixRoomEvent.Timeline, this.onCaseTimeline);
      const encrypted = callIsEncrypted(this.matrixRoom);
      if (encrypted) this.mediaKeys = new CallMediaKeys(this.client, this.session);
      this.update({ encrypted });
      this.session.joinRoomSession([], this.transport(), { callIntent: "video", manageMediaKeys: encrypted });
      this.rtcJoined = true;
      this.throwIfLeaving();

      // (b) A ticket from control, for which we prove our Matrix identity with an OpenID
      // token, then (c) LiveKit.
      const room = await this.newRoom(this.choices);
      this.lkRoom = room;
      window.__koinosRoom = room;
      this.attachRoomListeners(room);
      // Fetched alongside the token (it never rejects: without it LiveKit's ICE servers serve).
      this.iceConfig = this.iceConfiguration();
      await this.connectWaitingForService(room);
      this.throwIfLeaving();
      this.update({ phase: "connected", connection: "connected", statusText: "Connected." });
      this.mediaTimer = setInterval(() => void this.sampleMedia(), 1_000);

      await this.enableDefaultMedia(room, this.choices);
    } catch (err) {
      if (this.leaving) return;
      const appErr = toAppError(err);
      console.error("Starting the call failed", err);
      await this.teardown(3000);
      this.update({ phase: "failed", connection: "disconnected", statusText: appErr.message, error: appErr });
      throw new AppErrorException(appErr);
    }
  }

  /**
   * The first join: a call service that cannot be reached (control or LiveKit restarting) is
   * waited for with back-off, for `JOIN_RETRY_FOR_MS`, saying so; any other refusal is final.
   */
  private async connectWaitingForService(room: Room): Promise<void> {
    const started = Date.now();
    for (let attempt = 1; ; attempt++) {
      try {
        await this.connect(room);
        return;
      } catch (err) {
        this.throwIfLeaving();
        if (!joinIsRetryable(toAppError(err)) || Date.now() - started >= JOIN_RETRY_FOR_MS) throw err;
        console.warn(`Joining failed (attempt ${attempt}); retrying`, err);
        this.update({ statusText: "The call service is temporarily unavailable; retrying…" });
        await new Promise((resolve) => setTimeout(resolve, rejoinDelayMs(attempt)));
        this.throwIfLeaving();
      }
    }
  }

  /**
   * Asks control for a ticket and connects `room` with it. Control redeems each OpenID token
   * once, so every request gets a fresh one.
   */
  private async connect(room: Room): Promise<void> {
    const deviceId = this.client.getDeviceId();
    if (!deviceId) throw new AppErrorException(appError("auth", MESSAGES.authExpired));
    for (let attempt = 1; ; attempt++) {
      const openId = await this.client.getOpenIdToken();
      this.throwIfLeaving();
      const token = await requestRtcToken(this.config.rtcServiceUrl, this.matrixRoom.roomId, deviceId, openId);
      this.throwIfLeaving();
      if (!this.rejoining) this.update({ statusText: "Connecting to the media server…" });
      try {
        await room.connect(token.url, token.jwt, { rtcConfig: await (this.iceConfig ?? {}) });
        return;
      } catch (err) {
        // LiveKit closes an empty call's room after its departure timeout; a token issued in
        // that instant names a room that is gone. A new token request re-creates it.
        if (attempt === 1 && isRoomGone(err)) {
          console.warn("The call's media room closed while joining; retrying once", err);
          continue;
        }
        throw new AppErrorException(livekitConnectError(err));
      }
    }
  }

  /**
   * ICE servers for the media: our coturn, with credentials control issues to case members
   * only, for networks where the media server cannot be reached directly. Without them (control
   * or coturn unavailable) LiveKit's own ICE servers are used: a call on a good network must not
   * fail for want of a relay.
   */
  private async iceConfiguration(): Promise<RTCConfiguration> {
    try {
      const openId = await this.client.getOpenIdToken();
      const turn = await requestTurnServer(this.config.rtcServiceUrl, this.matrixRoom.roomId, openId);
      return { iceServers: [turn] };
    } catch (err) {
      console.warn("No TURN credentials; using LiveKit's ICE servers", err);
      return {};
    }
  }

  private throwIfLeaving(): void {
    if (this.leaving) throw new Error("left while joining");
  }

  /** Publishes what the lobby asked for; a device that fails is a notice, not a failed call. */
  private async enableDefaultMedia(room: Room, choices: MediaChoices): Promise<void> {
    const notices: AppError[] = [];
    if (choices.audioEnabled) {
      try {
        await room.localParticipant.setMicrophoneEnabled(true);
      } catch (err) {
        console.warn("Could not enable the microphone", err);
        notices.push(mediaErrorOf(err, "microphone"));
      }
    }
    if (choices.videoEnabled) {
      try {
        await room.localParticipant.setCameraEnabled(true);
      } catch (err) {
        console.warn("Could not enable the camera", err);
        notices.push(mediaErrorOf(err, "camera"));
      }
    }
    if (notices.length > 0) {
      this.update({ notice: appError("media", notices.map((n) => n.message).join(" ")) });
    }
    this.bump();
  }

  private attachRoomListeners(room: Room): void {
    room
      .on(RoomEvent.ParticipantConnected, this.bump)
      .on(RoomEvent.ParticipantDisconnected, this.bump)
      .on(RoomEvent.TrackSubscribed, this.bump)
      .on(RoomEvent.TrackUnsubscribed, this.bump)
      .on(RoomEvent.TrackPublished, this.bump)
      .on(RoomEvent.TrackUnpublished, this.bump)
      .on(RoomEvent.TrackMuted, this.bump)
      .on(RoomEvent.TrackUnmuted, this.bump)
      .on(RoomEvent.LocalTrackPublished, this.bump)
      .on(RoomEvent.LocalTrackUnpublished, (publication) => {
        // Stopped from the browser's own "Stop sharing" bar; not a connection being torn down.
        if (publication.source === Track.Source.ScreenShare && room.state === ConnectionState.Connected) this.screenWanted = false;
        this.bump();
      })
      .on(RoomEvent.TrackStreamStateChanged, this.bump)
      .on(RoomEvent.ParticipantNameChanged, this.bump)
      .on(RoomEvent.ParticipantAttributesChanged, (_changed, participant) => {
        if (participant === room.localParticipant) this.onOwnFallback(fallbackStageOf(participant));
        this.bump();
      })
      .on(RoomEvent.ActiveSpeakersChanged, this.bump)
      .on(RoomEvent.ConnectionQualityChanged, this.bump)
      .on(RoomEvent.RecordingStatusChanged, this.bump)
      .on(RoomEvent.AudioPlaybackStatusChanged, () => {
        this.update({ audioBlocked: !room.canPlaybackAudio });
      })
      .on(RoomEvent.MediaDevicesError, (error: Error) => {
        console.warn("Media device error", error);
        this.update({ notice: appError("media", MESSAGES.media) });
      })
      .on(RoomEvent.SignalReconnecting, this.onReconnecting)
      .on(RoomEvent.Reconnecting, this.onReconnecting)
      .on(RoomEvent.Reconnected, () => {
        // What arrived (or not) before the reconnection says nothing about the media now.
        this.resetWatches();
        clearTimeout(this.reconnectedTimer);
        this.reconnectedTimer = setTimeout(() => {
          if (this.snapshot.connection === "reconnected") this.update({ connection: "connected", statusText: "Connected." });
        }, 10_000);
        this.update({ connection: "reconnected", statusText: "Reconnected." });
      })
      .on(RoomEvent.Disconnected, (reason?: DisconnectReason) => {
        // While joining, a failed attempt is handled where `connect()` rejects (retry or error).
        if (this.leaving || this.rejoining || this.snapshot.phase === "joining" || room !== this.lkRoom) return;
        console.warn("LiveKit disconnected", reason);
        const outcome = disconnectOutcome(reason);
        // livekit-client gave up on this connection (the media server lost the call, or is
        // away): the page joins again by itself, keeping its place in the case room's call.
        if (outcome.rejoinable) {
          void this.rejoin(room);
          return;
        }
        this.endedByServer(room, outcome.text, false);
      });
  }

  /**
   * A host ended the call for everyone (control's event, believed only from someone who may
   * remove members): over for this page too, whatever its connection is doing, a re-join of
   * its own included.
   */
  private onCaseTimeline = (event: MatrixEvent, _room: MatrixRoom | undefined, toStartOfTimeline: boolean | undefined, _removed: boolean, data: IRoomTimelineData): void => {
    if (toStartOfTimeline || !data.liveEvent || event.getType() !== CALL_ENDED_EVENT) return;
    // An end from before this call started (a sync that lagged behind a new Join) is not ours;
    // a second of clock skew between the homeserver and this browser is allowed for.
    if (event.getTs() < this.startedAt - 1_000) return;
    const sender = event.getSender();
    if (!sender || !mayKick(this.matrixRoom, sender)) return;
    if (this.leaving || this.endingForAll || this.snapshot.phase === "disconnected") return;
    console.info(`The call was ended for everyone by ${String(event.getContent().ended_by)}`);
    // Stops the page's own re-join and the join retries where they stand.
    this.leaving = true;
    this.rejoining = false;
    void this.teardown(5000);
    this.update({ phase: "disconnected", connection: "disconnected", statusText: "The host ended the call.", rejoinable: false });
  };

  /** The call is over for this page: no ghost membership left behind, what happened shown. */
  private endedByServer(room: Room, text: string, rejoinable: boolean): void {
    clearInterval(this.mediaTimer);
    void this.leaveRtc(5000);
    this.mediaKeys?.dispose();
    if (window.__koinosRoom === room) window.__koinosRoom = undefined;
    this.update({ phase: "disconnected", connection: "disconnected", statusText: text, rejoinable });
  }

  /**
   * Joins the call again after livekit-client gave up on `lost` (recovery.ts): a fresh ticket
   * (control re-creates the LiveKit room), a new connection with the devices and mute state of
   * the old one. The MatrixRTC membership stays as it is, so the case room sees no leave/join.
   */
  private async rejoin(lost: Room): Promise<void> {
    this.rejoining = true;
    clearTimeout(this.reconnectedTimer);
    const lostState = lost.state;
    const choices: MediaChoices = {
      audioEnabled: this.micWanted,
      // A camera the gateway paused for the network comes back on (the fallback starts over).
      videoEnabled: this.cameraWanted,
      audioDeviceId: lost.getActiveDevice("audioinput") ?? this.choices.audioDeviceId,
      videoDeviceId: lost.getActiveDevice("videoinput") ?? this.choices.videoDeviceId,
      audioOutputDeviceId: lost.getActiveDevice("audiooutput") ?? this.choices.audioOutputDeviceId,
    };
    lost.removeAllListeners();
    // A connection whose path died while its signalling stands is closed first: LiveKit would
    // otherwise keep the old participant until the new one, of the same identity, replaced it.
    if (lostState !== ConnectionState.Disconnected) void lost.disconnect(true);
    this.cameraPausedByNetwork = false;
    this.update({ connection: "reconnecting", statusText: "Reconnecting the call…", fallback: "none", fallbackRecovered: false });
    const started = Date.now();
    let lastError: AppError | undefined;
    for (let attempt = 0; ; attempt++) {
      const wait = rejoinDelayMs(attempt);
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      if (this.leaving) return;
      let room: Room | undefined;
      try {
        // Inside the try: a room that cannot even be set up (its E2EE) is a failed attempt too.
        room = await this.newRoom(choices);
        await this.connect(room);
      } catch (err) {
        void room?.disconnect(true);
        if (this.leaving) return;
        lastError = toAppError(err);
        console.warn(`Re-joining the call failed (attempt ${attempt + 1})`, err);
        if (rejoinIsHopeless(lastError) || Date.now() - started >= REJOIN_FOR_MS) {
          this.rejoining = false;
          this.lkRoom = undefined;
          this.endedByServer(lost, rejoinGaveUpText(lastError), !rejoinIsHopeless(lastError));
          return;
        }
        continue;
      }
      if (this.leaving) {
        void room.disconnect(true);
        return;
      }
      this.rejoining = false;
      this.resetWatches();
      this.lkRoom = room;
      window.__koinosRoom = room;
      this.attachRoomListeners(room);
      this.update({ connection: "reconnected", statusText: "Reconnected.", audioBlocked: !room.canPlaybackAudio });
      this.reconnectedTimer = setTimeout(() => {
        if (this.snapshot.connection === "reconnected") this.update({ connection: "connected", statusText: "Connected." });
      }, 10_000);
      console.info(`Re-joined the call after ${Date.now() - started} ms (attempt ${attempt + 1})`);
      await this.enableDefaultMedia(room, choices);
      if (this.screenWanted) {
        this.screenWanted = false;
        this.update({ notice: appError("media", SCREEN_SHARE_STOPPED) });
      }
      return;
    }
  }

  /**
   * One sample for the media watch: bytes received over the remote tracks that should be
   * sending (subscribed, unmuted; video neither paused by LiveKit nor by our own fallback).
   */
  private async sampleMedia(): Promise<void> {
    const room = this.lkRoom;
    if (this.sampling || this.rejoining || !room || room.state !== ConnectionState.Connected) return;
    this.sampling = true;
    try {
      let bytes = 0;
      let expected = false;
      const videoPausedForUs = this.snapshot.fallback !== "none";
      for (const participant of room.remoteParticipants.values()) {
        for (const pub of participant.trackPublications.values()) {
          const track = pub.track;
          if (!pub.isSubscribed || !track || pub.isMuted) continue;
          if (pub.kind === Track.Kind.Video && (videoPausedForUs || track.streamState === Track.StreamState.Paused)) continue;
          expected = true;
          const report = await track.getRTCStatsReport();
          report?.forEach((stat: { type?: string; bytesReceived?: number }) => {
            if (stat.type === "inbound-rtp") bytes += stat.bytesReceived ?? 0;
          });
        }
      }
      const link = await this.linkBytes(room);
      if (room !== this.lkRoom || this.rejoining) return;
      if (this.linkWatch.observe({ at: Date.now(), bytes: link.bytes, expected: link.expected })) {
        console.warn(`Nothing received from the media server for ${LINK_LOST_AFTER_MS / 1000} s: joining again`);
        void this.rejoin(room);
        return;
      }
      const stalled = this.mediaWatch.observe({ at: Date.now(), bytes, expected });
      const connection = this.snapshot.connection;
      if (stalled && (connection === "connected" || connection === "reconnected")) {
        console.warn("No media from the call for 2 s although connected");
        clearTimeout(this.reconnectedTimer);
        this.update({ connection: "interrupted", statusText: "The others' sound and picture stopped arriving. Reconnecting…" });
      } else if (!stalled && connection === "interrupted") {
        this.update({ connection: "connected", statusText: "Connected." });
      }
    } catch (err) {
      console.debug("Could not read the call's media statistics", err);
    } finally {
      this.sampling = false;
    }
  }

  /**
   * Bytes received so far by the page's connections to the media server (its transports, of
   * what it publishes and of what it receives), and whether there is any connection to watch.
   */
  private async linkBytes(room: Room): Promise<{ bytes: number; expected: boolean }> {
    // What we publish and what we receive may run over two peer connections, each with its
    // transport named by every one of its tracks: the most a side's tracks name is that side's.
    // (With LiveKit's single peer connection both sides name the same one: counted twice, it
    // still grows exactly when it does.)
    const sides = [
      [...room.localParticipant.trackPublications.values()].map((pub) => pub.track),
      [...room.remoteParticipants.values()].flatMap((p) => [...p.trackPublications.values()].map((pub) => pub.track)),
    ];
    let bytes = 0;
    let expected = false;
    for (const tracks of sides) {
      let side = 0;
      for (const track of tracks) {
        const report = await track?.getRTCStatsReport();
        report?.forEach((stat: { type?: string; bytesReceived?: number }) => {
          if (stat.type !== "transport") return;
          expected = true;
          side = Math.max(side, stat.bytesReceived ?? 0);
        });
      }
      bytes += side;
    }
    return { bytes, expected };
  }

  private resetWatches(): void {
    this.mediaWatch.reset();
    this.linkWatch.reset();
  }

  /** livekit-client lost the connection and is getting it back (media may keep flowing meanwhile). */
  private onReconnecting = (): void => {
    clearTimeout(this.reconnectedTimer);
    this.update({ connection: "reconnecting", statusText: "Connection lost. Reconnecting…" });
  };

  /** The gateway changed our fallback stage. */
  private onOwnFallback(stage: FallbackStage): void {
    const before = this.snapshot.fallback;
    if (stage === before) return;
    const room = this.lkRoom;
    if (stage === "camera" && room?.localParticipant.isCameraEnabled) this.cameraPausedByNetwork = true;
    const recovered = stage === "none" && before !== "none";
    if (recovered && this.cameraPausedByNetwork) {
      // The gateway paused the camera but does not unmute anyone remotely: we turn it back on.
      this.cameraPausedByNetwork = false;
      void room?.localParticipant.setCameraEnabled(true).catch((err: unknown) => {
        console.warn("Could not restart the camera after the fallback", err);
        this.update({ notice: appError("media", "Could not turn your camera back on.") });
      });
    }
    clearTimeout(this.recoveredTimer);
    if (recovered) {
      this.recoveredTimer = setTimeout(() => this.update({ fallbackRecovered: false }), 10_000);
    }
    this.update({ fallback: stage, fallbackRecovered: recovered });
  }

  /** A device that works again makes its earlier failure notice stale. */
  private clearMediaNotice(): void {
    if (this.snapshot.notice?.category === "media") this.update({ notice: undefined });
  }

  async toggleMicrophone(): Promise<void> {
    const room = this.lkRoom;
    if (!room || room.state !== ConnectionState.Connected) return;
    const lp = room.localParticipant;
    try {
      await lp.setMicrophoneEnabled(!lp.isMicrophoneEnabled);
      this.micWanted = lp.isMicrophoneEnabled;
      this.clearMediaNotice();
    } catch (err) {
      console.warn("Microphone toggle failed", err);
      this.update({ notice: mediaErrorOf(err, "microphone") });
    }
    this.bump();
  }

  async toggleCamera(): Promise<void> {
    const room = this.lkRoom;
    if (!room || room.state !== ConnectionState.Connected) return;
    // Paused for the network's sake: the gateway would refuse the unmute.
    if (this.snapshot.fallback === "camera") return;
    const lp = room.localParticipant;
    try {
      await lp.setCameraEnabled(!lp.isCameraEnabled);
      this.cameraWanted = lp.isCameraEnabled;
      this.clearMediaNotice();
    } catch (err) {
      console.warn("Camera toggle failed", err);
      this.update({ notice: mediaErrorOf(err, "camera") });
    }
    this.bump();
  }

  async toggleScreenShare(): Promise<void> {
    const room = this.lkRoom;
    if (!room || room.state !== ConnectionState.Connected) return;
    const lp = room.localParticipant;
    try {
      await lp.setScreenShareEnabled(!lp.isScreenShareEnabled, { audio: false });
      this.screenWanted = lp.isScreenShareEnabled;
      if (this.snapshot.notice?.message === SCREEN_SHARE_STOPPED) this.update({ notice: undefined });
    } catch (err) {
      // Cancelling the browser's picker is a choice, not a failure.
      if (!(err instanceof DOMException && err.name === "NotAllowedError")) {
        console.warn("Screen share toggle failed", err);
        this.update({ notice: appError("media", "Could not share your screen.") });
      }
    }
    this.bump();
  }

  async startAudio(): Promise<void> {
    await this.lkRoom?.startAudio();
    this.update({ audioBlocked: !(this.lkRoom?.canPlaybackAudio ?? true) });
  }

  private leaveRtc(timeoutMs: number): Promise<void> {
    this.session.off(MatrixRTCSessionEvent.MembershipManagerError, this.onMembershipManagerError);
    this.matrixRoom.off(MatrixRoomEvent.Timeline, this.onCaseTimeline);
    if (!this.rtcJoined) return Promise.resolve();
    this.rtcJoined = false;
    const left = this.session.leaveRoomSession(timeoutMs).then(
      () => undefined,
      (err: unknown) => console.warn("Leaving the MatrixRTC session failed", err),
    );
    // A join right after (Rejoin, or Leave then Join) must not race this leave's membership update.
    pendingRtcLeave = Promise.all([pendingRtcLeave, left]).then(() => undefined);
    return left;
  }

  /** A LiveKit room for this call, encrypting its media when the case room is encrypted. */
  private async newRoom(choices: MediaChoices): Promise<Room> {
    const e2ee = this.mediaKeys?.forNewRoom();
    const room = createLivekitRoom(choices, e2ee);
    // Before anything is published: a track's encryption is fixed when it is announced.
    if (e2ee) await room.setE2EEEnabled(true);
    return room;
  }

  private async teardown(timeoutMs: number): Promise<void> {
    activeCalls.delete(this);
    clearInterval(this.mediaTimer);
    clearTimeout(this.recoveredTimer);
    clearTimeout(this.reconnectedTimer);
    const room = this.lkRoom;
    this.lkRoom = undefined;
    if (window.__koinosRoom === room) window.__koinosRoom = undefined;
    const tasks: Promise<unknown>[] = [this.leaveRtc(timeoutMs)];
    if (room) {
      room.removeAllListeners();
      tasks.push(room.disconnect(true).catch((err: unknown) => console.warn("LiveKit disconnect failed", err)));
    }
    await Promise.all(tasks);
    this.mediaKeys?.dispose();
  }

  /** Leaves the call: disconnects LiveKit and leaves the MatrixRTC session. */
  async leave(): Promise<void> {
    if (this.leaving) return;
    this.leaving = true;
    this.update({ phase: "leaving", statusText: "Leaving the call…" });
    await this.teardown(5000);
    this.update({ phase: "left", connection: "disconnected", statusText: "You left the call." });
  }

  /** A host ends the call for everyone (control deletes the LiveKit room, clears memberships). */
  async endForAll(): Promise<boolean> {
    if (this.leaving || this.endingForAll) return false;
    // Our own end, announced in the case room before control answers, is not news to us.
    this.endingForAll = true;
    try {
      const openId = await this.client.getOpenIdToken();
      await requestEndCall(this.config.rtcServiceUrl, this.matrixRoom.roomId, openId);
    } catch (err) {
      console.warn("Ending the call failed", err);
      this.update({ notice: toAppError(err) });
      return false;
    } finally {
      this.endingForAll = false;
    }
    this.leaving = true;
    await this.teardown(5000);
    this.update({ phase: "left", connection: "disconnected", statusText: "You ended the call for everyone." });
    return true;
  }

  /**
   * Synchronous best effort for page unload: fires the leave requests without waiting.
   * (Where the homeserver supports MSC4140, the delayed leave event covers what does not get out.)
   */
  leaveOnUnload(): void {
    if (this.leaving) return;
    this.leaving = true;
    void this.teardown(2000);
  }
}
