import type { ReconnectContext } from "livekit-client";
import { describe, expect, it } from "vitest";
import { appError } from "../errors/errors";
import {
  CallReconnectPolicy,
  RESUME_FOR_MS,
  joinIsRetryable,
  rejoinDelayMs,
  rejoinGaveUpText,
  rejoinIsHopeless,
} from "./recovery";

function context(retryCount: number, elapsedMs: number): ReconnectContext {
  return { retryCount, elapsedMs };
}

describe("livekit-client's retries", () => {
  it("come soon and at most a second apart, and stop after RESUME_FOR_MS", () => {
    const policy = new CallReconnectPolicy();
    for (let retry = 0; retry < 40; retry++) {
      const delay = policy.nextRetryDelayInMs(context(retry, retry * 300));
      if (retry * 300 >= RESUME_FOR_MS) {
        expect(delay).toBeNull();
      } else {
        expect(delay).not.toBeNull();
        expect(delay!).toBeGreaterThanOrEqual(0);
        expect(delay!).toBeLessThanOrEqual(1_200);
      }
    }
  });
});

describe("the page's own re-joins", () => {
  it("start at once and back off to about 3 s, never a tight loop", () => {
    expect(rejoinDelayMs(0)).toBe(0);
    for (let attempt = 1; attempt < 50; attempt++) {
      const delay = rejoinDelayMs(attempt);
      expect(delay).toBeGreaterThanOrEqual(400);
      expect(delay).toBeLessThanOrEqual(3_600);
    }
    expect(rejoinDelayMs(10)).toBeGreaterThanOrEqual(2_400);
  });

  it("retry only what another attempt can change", () => {
    expect(joinIsRetryable(appError("network", "x"))).toBe(true);
    for (const category of ["forbidden", "auth", "full", "media", "unknown"] as const) {
      expect(joinIsRetryable(appError(category, "x"))).toBe(false);
    }
    expect(rejoinIsHopeless(appError("forbidden", "x"))).toBe(true);
    expect(rejoinIsHopeless(appError("auth", "x"))).toBe(true);
    expect(rejoinIsHopeless(appError("network", "x"))).toBe(false);
  });

  it("say why they stopped", () => {
    expect(rejoinGaveUpText(appError("forbidden", "x"))).toMatch(/no longer a member/);
    expect(rejoinGaveUpText(appError("auth", "Your session has expired."))).toBe("Your session has expired.");
    expect(rejoinGaveUpText(undefined)).toBe("The connection to the call was lost.");
  });
});
