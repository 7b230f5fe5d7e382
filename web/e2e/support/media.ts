import { expect, type Page } from "@playwright/test";

/** What a page receives: its LiveKit room's subscriptions, inbound RTP counters and frame heights, tiles, ICE candidates. */

export interface RemoteMediaSummary {
  remotes: number;
  identities: string[];
  subscribedAudio: number;
  subscribedVideo: number;
}

/** What the page's LiveKit room (test hook window.__koinosRoom) has subscribed. */
export async function remoteMedia(page: Page): Promise<RemoteMediaSummary | null> {
  return page.evaluate(() => {
    const room = window.__koinosRoom;
    if (!room) return null;
    let subscribedAudio = 0;
    let subscribedVideo = 0;
    const identities: string[] = [];
    for (const p of room.remoteParticipants.values()) {
      identities.push(p.identity);
      for (const pub of p.trackPublications.values()) {
        if (!pub.isSubscribed || !pub.track) continue;
        const kind: string = pub.kind;
        if (kind === "audio") subscribedAudio++;
        if (kind === "video") subscribedVideo++;
      }
    }
    return { remotes: room.remoteParticipants.size, identities, subscribedAudio, subscribedVideo };
  });
}

export interface InboundCounters {
  framesDecoded: number;
  audioBytesReceived: number;
}

/** Sums inbound-rtp framesDecoded (video) and bytesReceived (audio) over the remote tracks. */
export async function inboundCounters(page: Page): Promise<InboundCounters> {
  return page.evaluate(async () => {
    const room = window.__koinosRoom;
    let framesDecoded = 0;
    let audioBytesReceived = 0;
    if (!room) return { framesDecoded, audioBytesReceived };
    for (const p of room.remoteParticipants.values()) {
      for (const pub of p.trackPublications.values()) {
        const track = pub.track;
        if (!pub.isSubscribed || !track) continue;
        const report = await track.getRTCStatsReport();
        report?.forEach((stat: { type?: string; kind?: string; framesDecoded?: number; bytesReceived?: number }) => {
          if (stat.type !== "inbound-rtp") return;
          if (stat.kind === "video") framesDecoded += stat.framesDecoded ?? 0;
          if (stat.kind === "audio") audioBytesReceived += stat.bytesReceived ?? 0;
        });
      }
    }
    return { framesDecoded, audioBytesReceived };
  });
}

/** Remote video frames and audio bytes this page receives keep growing. */
export async function expectMediaFlowing(page: Page, who: string): Promise<void> {
  await expect(async () => {
    const before = await inboundCounters(page);
    await page.waitForTimeout(2_000);
    const after = await inboundCounters(page);
    expect(after.framesDecoded, `${who}: remote video framesDecoded should increase`).toBeGreaterThan(before.framesDecoded);
    expect(after.audioBytesReceived, `${who}: remote audio bytesReceived should increase`).toBeGreaterThan(
      before.audioBytesReceived,
    );
  }).toPass({ timeout: 30_000, intervals: [500] });
}

/** Frame height of every remote camera video this page receives now (getStats inbound-rtp). */
export async function inboundVideoHeights(page: Page): Promise<number[]> {
  return page.evaluate(async () => {
    const room = window.__koinosRoom;
    const heights: number[] = [];
    if (!room) return heights;
    for (const p of room.remoteParticipants.values()) {
      for (const pub of p.trackPublications.values()) {
        const track = pub.track;
        const kind: string = pub.kind;
        const source: string = pub.source;
        if (!pub.isSubscribed || !track || kind !== "video" || source !== "camera") continue;
        const report = await track.getRTCStatsReport();
        report?.forEach((stat: { type?: string; kind?: string; frameHeight?: number }) => {
          if (stat.type === "inbound-rtp" && stat.kind === "video" && stat.frameHeight) heights.push(stat.frameHeight);
        });
      }
    }
    return heights;
  });
}

/**
 * Frame height of the camera video this page receives from `user` (the part of the Matrix id
 * before the colon), or 0 while none is decoded.
 */
export async function inboundVideoHeightFrom(page: Page, user: string): Promise<number> {
  return page.evaluate(async (prefix) => {
    const room = window.__koinosRoom;
    if (!room) return 0;
    for (const p of room.remoteParticipants.values()) {
      if (!p.identity.startsWith(prefix)) continue;
      const camera = [...p.trackPublications.values()].find((pub) => {
        const source: string = pub.source;
        return source === "camera" && pub.isSubscribed;
      });
      const report = await camera?.track?.getRTCStatsReport();
      let height = 0;
      report?.forEach((stat: { type?: string; kind?: string; frameHeight?: number }) => {
        if (stat.type === "inbound-rtp" && stat.kind === "video" && stat.frameHeight) height = stat.frameHeight;
      });
      return height;
    }
    return 0;
  }, `@${user}:`);
}

/** Whether `viewer` sees `user`'s track of this source muted (null: no such publication). */
export async function mutedFor(viewer: Page, user: string, source: "microphone" | "camera"): Promise<boolean | null> {
  return viewer.evaluate(
    ({ prefix, source }) => {
      for (const p of window.__koinosRoom?.remoteParticipants.values() ?? []) {
        if (!p.identity.startsWith(prefix)) continue;
        for (const pub of p.trackPublications.values()) {
          const s: string = pub.source;
          if (s === source) return pub.isMuted;
        }
      }
      return null;
    },
    { prefix: `@${user}:`, source },
  );
}

/** The device id behind this page's published microphone or camera track. */
export async function publishedDevice(page: Page, source: "microphone" | "camera"): Promise<{ deviceId: string; trackId: string }> {
  return page.evaluate((source) => {
    for (const pub of window.__koinosRoom?.localParticipant.trackPublications.values() ?? []) {
      const s: string = pub.source;
      const track = pub.track?.mediaStreamTrack;
      if (s === source && track) return { deviceId: track.getSettings().deviceId ?? "", trackId: track.id };
    }
    return { deviceId: "", trackId: "" };
  }, source);
}

export interface TileLayout {
  /** Camera and screen tiles on the page. */
  tiles: number;
  /** Distinct columns and rows the camera tiles sit in. */
  columns: number;
  rows: number;
  /** Problems found: overlapping tiles, tiles or controls outside the window, a sideways scroll. */
  problems: string[];
}

/**
 * How the call view is laid out in this page's window: the grid of tiles, and whether anything
 * a practitioner needs is out of reach (outside the window's width, overlapping, too small to tap).
 */
export async function tileLayout(page: Page): Promise<TileLayout> {
  return page.evaluate(() => {
    const problems: string[] = [];
    const width = window.innerWidth;
    if (document.documentElement.scrollWidth > width) problems.push(`page scrolls sideways (${document.documentElement.scrollWidth} > ${width})`);
    const tiles = [...document.querySelectorAll<HTMLElement>('[data-testid="tile"], [data-testid="screen_tile"]')];
    const boxes = tiles.map((t) => ({ id: `${t.dataset.testid}:${t.dataset.identity}`, r: t.getBoundingClientRect(), el: t }));
    for (const { id, r, el } of boxes) {
      if (r.left < 0 || r.right > width + 0.5) problems.push(`${id} outside the window (${r.left}…${r.right})`);
      if (r.width < 120) problems.push(`${id} is only ${r.width}px wide`);
      const caption = el.querySelector("figcaption")?.getBoundingClientRect();
      if (caption && (caption.left < r.left || caption.right > r.right + 0.5)) problems.push(`${id}'s name overflows its tile`);
    }
    boxes.forEach((a, i) => {
      for (const b of boxes.slice(i + 1)) {
        if (a.r.left < b.r.right - 1 && b.r.left < a.r.right - 1 && a.r.top < b.r.bottom - 1 && b.r.top < a.r.bottom - 1) {
          problems.push(`${a.id} overlaps ${b.id}`);
        }
      }
    });
    for (const button of document.querySelectorAll<HTMLElement>('[role="toolbar"] button')) {
      const r = button.getBoundingClientRect();
      const name = button.getAttribute("aria-label") ?? button.textContent ?? "";
      if (r.left < 0 || r.right > width + 0.5) problems.push(`button "${name}" outside the window`);
      if (r.height < 40) problems.push(`button "${name}" is only ${r.height}px tall`);
    }
    const cameras = boxes.filter((b) => b.el.dataset.testid === "tile").map((b) => b.r);
    const distinct = (values: number[]): number => new Set(values.map((v) => Math.round(v))).size;
    return { tiles: boxes.length, columns: distinct(cameras.map((r) => r.left)), rows: distinct(cameras.map((r) => r.top)), problems };
  });
}

/**
 * The local candidate type ("relay", "host", ...) of the pair each open peer connection of the
 * page (`turnOnly`) sends its media over now; empty while none is selected.
 */
export async function selectedCandidateTypes(page: Page): Promise<string[]> {
  return page.evaluate(async () => {
    const pcs = (window as unknown as { __koinosPeerConnections?: RTCPeerConnection[] }).__koinosPeerConnections ?? [];
    const types: string[] = [];
    for (const pc of pcs) {
      if (pc.connectionState !== "connected") continue;
      const stats = await pc.getStats();
      let pairId: string | undefined;
      stats.forEach((s: { type: string; selectedCandidatePairId?: string }) => {
        if (s.type === "transport" && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
      });
      const pair = pairId ? (stats.get(pairId) as { localCandidateId?: string } | undefined) : undefined;
      const local = pair?.localCandidateId ? (stats.get(pair.localCandidateId) as { candidateType?: string } | undefined) : undefined;
      if (local?.candidateType) types.push(local.candidateType);
    }
    return types;
  });
}

/**
 * Milliseconds from `since` (now by default) until remote video frames and audio bytes grow on
 * every one of `pages` (each sampled twice, half a second apart), polled until `withinMs` after
 * `since`; throws if they do not.
 */
export async function untilMediaFlowsOnAll(pages: Page[], withinMs: number, since = Date.now()): Promise<number> {
  const start = since;
  const flowing = new Set<Page>();
  while (Date.now() - start < withinMs) {
    const before = await Promise.all(pages.map((p) => inboundCounters(p).catch(() => null)));
    await pages[0]?.waitForTimeout(500);
    const after = await Promise.all(pages.map((p) => inboundCounters(p).catch(() => null)));
    pages.forEach((page, i) => {
      const [b, a] = [before[i], after[i]];
      if (b && a && a.framesDecoded > b.framesDecoded && a.audioBytesReceived > b.audioBytesReceived) flowing.add(page);
      else flowing.delete(page);
    });
    if (flowing.size === pages.length) return Date.now() - start - 500;
  }
  throw new Error(`media did not flow again on every page within ${withinMs} ms`);
}
