import type { Participant } from "livekit-client";
import { describe, expect, it } from "vitest";
import contract from "../../../proto/contract/fallback.json";
import { FALLBACK_ATTRIBUTE, fallbackNotice, fallbackStageOf, type FallbackStage } from "./networkFallback";

function participantWith(attributes: Record<string, string>): Participant {
  return { attributes } as unknown as Participant;
}

describe("the fallback attribute", () => {
  it("is the shared contract's, and every stage's wire value reads back as that stage", () => {
    expect(FALLBACK_ATTRIBUTE).toBe(contract.attribute);
    for (const [stage, value] of Object.entries(contract.stages)) {
      expect(fallbackStageOf(participantWith({ [FALLBACK_ATTRIBUTE]: value }))).toBe(stage as FallbackStage);
    }
  });

  it("reads anything else, or nothing, as no fallback", () => {
    expect(fallbackStageOf(participantWith({}))).toBe("none");
    expect(fallbackStageOf(participantWith({ [FALLBACK_ATTRIBUTE]: "CAMERA" }))).toBe("none");
    expect(fallbackStageOf(participantWith({ "org.koinos.other": "camera" }))).toBe("none");
  });

  it("tells the practitioner about each stage, and about recovery only once recovered", () => {
    expect(fallbackNotice("incoming_video", false)).toMatch(/audio only/);
    expect(fallbackNotice("camera", false)).toMatch(/camera is paused/);
    expect(fallbackNotice("none", true)).toMatch(/recovered/);
    expect(fallbackNotice("none", false)).toBeUndefined();
  });
});
