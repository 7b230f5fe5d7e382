import type { Participant } from "livekit-client";
// The attribute and its stage values, as the gateway and control write them (one contract).
import contract from "../../../proto/contract/fallback.json";

/**
 * The gateway's audio-only fallback, as the page sees it: the gateway writes the stage into the
 * participant's LiveKit attribute `org.koinos.rtc.fallback` (absent when video flows normally).
 * Everyone can read it, so remote tiles can say why someone's video stopped too.
 */
export const FALLBACK_ATTRIBUTE: string = contract.attribute;

/** `incoming_video`: the video this participant receives is paused; `camera`: its camera too. */
export type FallbackStage = keyof typeof contract.stages;

export function fallbackStageOf(participant: Participant): FallbackStage {
  const value = participant.attributes[FALLBACK_ATTRIBUTE];
  if (value === contract.stages.incoming_video) return "incoming_video";
  if (value === contract.stages.camera) return "camera";
  return "none";
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
