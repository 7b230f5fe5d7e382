import { describe, expect, it } from "vitest";
import { MediaWatch, STALL_AFTER_MS } from "./mediaWatch";

describe("MediaWatch", () => {
  it("says media stopped once bytes that should arrive have not grown for the whole stall time", () => {
    const watch = new MediaWatch();
    expect(watch.observe({ at: 0, bytes: 100, expected: true })).toBe(false);
    expect(watch.observe({ at: 1_000, bytes: 200, expected: true })).toBe(false);
    expect(watch.observe({ at: 1_000 + STALL_AFTER_MS - 1, bytes: 200, expected: true })).toBe(false);
    expect(watch.observe({ at: 1_000 + STALL_AFTER_MS, bytes: 200, expected: true })).toBe(true);
    // Media again: no longer stopped.
    expect(watch.observe({ at: 5_000, bytes: 300, expected: true })).toBe(false);
  });

  it("never says so while nothing should arrive (a quiet call), and starts over after", () => {
    const watch = new MediaWatch();
    for (let at = 0; at <= 10_000; at += 1_000) expect(watch.observe({ at, bytes: 0, expected: false })).toBe(false);
    expect(watch.observe({ at: 11_000, bytes: 0, expected: true })).toBe(false);
    expect(watch.observe({ at: 11_000 + STALL_AFTER_MS, bytes: 0, expected: true })).toBe(true);
  });

  it("starts over when the counters go back (tracks changed) or the connection is new", () => {
    const watch = new MediaWatch(1_000);
    watch.observe({ at: 0, bytes: 500, expected: true });
    expect(watch.observe({ at: 2_000, bytes: 10, expected: true })).toBe(false);
    expect(watch.observe({ at: 2_500, bytes: 10, expected: true })).toBe(false);
    watch.reset();
    expect(watch.observe({ at: 9_000, bytes: 10, expected: true })).toBe(false);
    expect(watch.observe({ at: 10_000, bytes: 10, expected: true })).toBe(true);
  });
});
