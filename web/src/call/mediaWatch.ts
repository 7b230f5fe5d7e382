/**
 * Whether the media of a call has stopped arriving although the connection looks fine: a media
 * server node lost while the signalling survives, a network that drops UDP but not TCP.
 * livekit-client notices only when its peer connection fails (about 10 s later); until then the
 * page must not say "Connected." (issue: never for more than 2 s without media).
 *
 * Pure: fed one sample a second by `callController.ts` (bytes received over the remote tracks
 * that should be sending), it answers whether the media is stalled now.
 */

/** Media that should arrive and has not for this long is "stalled". */
export const STALL_AFTER_MS = 2_000;

/**
 * The page's own path to the media server is lost when its connections have received nothing
 * at all for this long: not media, and not what LiveKit sends on any live path (its ICE
 * keepalives every 2 s, its reports on what we publish every second or so). A TURN server that
 * restarted and forgot our allocation, a media node gone: the page re-joins at once, as
 * livekit-client would only after its peer connection failed (10 s and more). Fed with the
 * bytes received by the page's transports, `MediaWatch` with this threshold tells it.
 */
export const LINK_LOST_AFTER_MS = 4_000;

export interface MediaSample {
  /** When it was taken (ms, monotonic enough: Date.now()). */
  at: number;
  /** Bytes received so far over the tracks that should be sending. */
  bytes: number;
  /** Whether any remote track should be sending now (unmuted, subscribed, not paused). */
  expected: boolean;
}

export class MediaWatch {
  private bytes = 0;
  private grewAt: number | undefined;

  constructor(private readonly stallAfterMs = STALL_AFTER_MS) {}

  /** Takes a sample; true while media that should arrive has not for `stallAfterMs`. */
  observe(sample: MediaSample): boolean {
    // Nothing to wait for, or the set of tracks changed (a counter went back): start over.
    if (!sample.expected || sample.bytes < this.bytes || this.grewAt === undefined) {
      this.bytes = sample.bytes;
      this.grewAt = sample.at;
      return false;
    }
    if (sample.bytes > this.bytes) {
      this.bytes = sample.bytes;
      this.grewAt = sample.at;
      return false;
    }
    return sample.at - this.grewAt >= this.stallAfterMs;
  }

  /** A new connection: what came before says nothing about it. */
  reset(): void {
    this.bytes = 0;
    this.grewAt = undefined;
  }
}
