import type { Participant } from "livekit-client";

/**
 * The gateway's audio-only fallback, as the page sees it: the gateway writes the stage into the
 * participant's LiveKit attribute `org.koinos.rtc.fallback` (absent when video flows normally).
 * Everyone can read it, so remote tiles can say why someone's video stopped too.
 */
export const FALLBACK_ATTRIBUTE = "org.koinos.rtc.fallback";

/** `incoming_video`: the video this participant receives is paused; `camera`: its camera too. */
export type FallbackStage = "none" | "incoming_video" | "camera";

export function fallbackStageOf(participant: Participant): FallbackStage {
  const value = participant.attributes[FALLBACK_ATTRIBUTE];
  return value === "incoming_video" || value === "camera" ? value : "none";
}

/** What the practitioner is told, in plain words and without alarm. */
export function fallbackNotice(stage: FallbackStage, recovered: boolean): string | undefined {
  switch (stage) {
    case "incoming_video":
      return "Your connection is weak, so other people's video is paused and you are on audio only. Video comes back by itself when the connection recovers.";
    case "camera":
      return "Your connection is still weak, so your camera is paused too. Everyone can still hear you. Video comes back by itself when the connection recovers.";
    case "none":
      return recovered ? "Your connection has recovered. Video is back." : undefined;
  }
}
