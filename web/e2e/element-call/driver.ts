/**
 * A minimal Matrix widget driver for Element Call: what Element Web's StopGapWidgetDriver does
 * for it, reduced to what Element Call 0.26 asks of its host in an unencrypted room. Every
 * request goes to the real homeserver through matrix-js-sdk; nothing is faked.
 */
import { EventTimeline, MatrixError, Method, type MatrixClient, type MatrixEvent } from "matrix-js-sdk";
import {
  MatrixCapabilities,
  OpenIDRequestState,
  WidgetDriver,
  type Capability,
  type IOpenIDUpdate,
  type IRoomEvent,
  type IRtcTransportsResult,
  type ISendDelayedEventDetails,
  type ISendEventDetails,
  type IWidgetApiErrorResponseDataDetails,
  type SimpleObservable,
} from "matrix-widget-api";

/** Capabilities this host cannot honour, so it does not grant them. */
const REFUSED: ReadonlySet<string> = new Set<string>([
  // MSC4354 sticky events: the dev homeserver does not offer them (Element Call's default
  // "compatibility" mode uses state events and does not need them).
  MatrixCapabilities.MSC4407SendStickyEvent,
  MatrixCapabilities.MSC4407ReceiveStickyEvent,
]);

/** What the host saw the widget do, for the test to read. */
export interface DriverLog {
  /** Capabilities the widget asked for. */
  requested: string[];
  /** Requests that reached the homeserver, e.g. "state org.matrix.msc3401.call.member". */
  calls: string[];
  /** Driver errors, as text. */
  errors: string[];
}

function raw(event: MatrixEvent): IRoomEvent {
  return event.getEffectiveEvent() as unknown as IRoomEvent;
}

export class ElementCallDriver extends WidgetDriver {
  public readonly log: DriverLog = { requested: [], calls: [], errors: [] };

  public constructor(
    private readonly client: MatrixClient,
    private readonly roomId: string,
  ) {
    super();
  }

  private record<T>(what: string, work: Promise<T>): Promise<T> {
    this.log.calls.push(what);
    return work.catch((err: unknown) => {
      this.log.errors.push(`${what}: ${err instanceof Error ? err.message : String(err)}`);
      throw err;
    });
  }

  private target(roomId: string | null | undefined): string {
    return roomId ?? this.roomId;
  }

  /** Element Web approves Element Call's capabilities without asking; so does this host. */
  public override validateCapabilities(requested: Set<Capability>): Promise<Set<Capability>> {
    this.log.requested = [...requested];
    return Promise.resolve(new Set([...requested].filter((c) => !REFUSED.has(c))));
  }

  public override async sendEvent(
    eventType: string,
    content: unknown,
    stateKey: string | null = null,
    roomId: string | null = null,
  ): Promise<ISendEventDetails> {
    const room = this.target(roomId);
    const kind = stateKey === null ? "event" : "state";
    const path =
      stateKey === null
        ? `/rooms/${encodeURIComponent(room)}/send/${encodeURIComponent(eventType)}/${encodeURIComponent(this.client.makeTxnId())}`
        : `/rooms/${encodeURIComponent(room)}/state/${encodeURIComponent(eventType)}/${encodeURIComponent(stateKey)}`;
    // Straight to the client-server API (no local echo): the homeserver's copy reaches the
    // widget through sync like anyone else's event.
    const res = await this.record(
      `${kind} ${eventType}`,
      this.client.http.authedRequest<{ event_id: string }>(Method.Put, path, undefined, content as Record<string, unknown>),
    );
    return { roomId: room, eventId: res.event_id };
  }

  public override async sendDelayedEvent(
    delay: number,
    eventType: string,
    content: unknown,
    stateKey: string | null = null,
    roomId: string | null = null,
  ): Promise<ISendDelayedEventDetails> {
    const room = this.target(roomId);
    const body = content as Record<string, unknown>;
    const res =
      stateKey === null
        ? await this.record(
            `delayed event ${eventType}`,
            // matrix-js-sdk types event contents by event type; the widget's types are open.
            this.client._unstable_sendDelayedEvent(room, { delay }, null, eventType as never, body as never),
          )
        : await this.record(
            `delayed state ${eventType}`,
            this.client._unstable_sendDelayedStateEvent(room, { delay }, eventType as never, body as never, stateKey),
          );
    return { roomId: room, delayId: res.delay_id };
  }

  public override async cancelScheduledDelayedEvent(delayId: string): Promise<void> {
    await this.record("delayed cancel", this.client._unstable_cancelScheduledDelayedEvent(delayId));
  }

  public override async restartScheduledDelayedEvent(delayId: string): Promise<void> {
    await this.record("delayed restart", this.client._unstable_restartScheduledDelayedEvent(delayId));
  }

  public override async sendScheduledDelayedEvent(delayId: string): Promise<void> {
    await this.record("delayed send", this.client._unstable_sendScheduledDelayedEvent(delayId));
  }

  public override async sendToDevice(
    eventType: string,
    encrypted: boolean,
    contentMap: { [userId: string]: { [deviceId: string]: object } },
  ): Promise<void> {
    if (encrypted) {
      // Per-participant E2EE in an encrypted case: each device's content Olm-encrypted for it.
      const crypto = this.client.getCrypto();
      if (!crypto) throw new Error("this widget host's crypto did not start");
      const byContent = new Map<string, { userId: string; deviceId: string }[]>();
      for (const [userId, devices] of Object.entries(contentMap)) {
        for (const [deviceId, content] of Object.entries(devices)) {
          const key = JSON.stringify(content);
          byContent.set(key, [...(byContent.get(key) ?? []), { userId, deviceId }]);
        }
      }
      for (const [content, devices] of byContent) {
        const batch = await crypto.encryptToDeviceMessages(eventType, devices, JSON.parse(content) as Record<string, unknown>);
        await this.record(`to-device ${eventType} (encrypted)`, this.client.queueToDevice(batch));
      }
      return;
    }
    const map = new Map<string, Map<string, Record<string, unknown>>>();
    for (const [userId, devices] of Object.entries(contentMap)) {
      map.set(userId, new Map(Object.entries(devices) as [string, Record<string, unknown>][]));
    }
    await this.record(`to-device ${eventType}`, this.client.sendToDevice(eventType, map));
  }

  public override readRoomState(roomId: string, eventType: string, stateKey: string | undefined): Promise<IRoomEvent[]> {
    const state = this.client.getRoom(roomId)?.getLiveTimeline().getState(EventTimeline.FORWARDS);
    if (!state) return Promise.resolve([]);
    if (stateKey === undefined) return Promise.resolve(state.getStateEvents(eventType).map(raw));
    const event = state.getStateEvents(eventType, stateKey);
    return Promise.resolve(event ? [raw(event)] : []);
  }

  public override readRoomTimeline(
    roomId: string,
    eventType: string,
    msgtype: string | undefined,
    stateKey: string | undefined,
    limit: number,
    since: string | undefined,
  ): Promise<IRoomEvent[]> {
    const events = this.client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? [];
    const max = limit > 0 ? Math.min(limit, 100) : 100;
    const found: IRoomEvent[] = [];
    for (let i = events.length - 1; i >= 0 && found.length < max; i--) {
      const ev = events[i];
      if (!ev) continue;
      if (since !== undefined && ev.getId() === since) break;
      if (ev.getType() !== eventType) continue;
      if (msgtype !== undefined && ev.getContent()["msgtype"] !== msgtype) continue;
      if (stateKey !== undefined && ev.getStateKey() !== stateKey) continue;
      found.push(raw(ev));
    }
    return Promise.resolve(found);
  }

  /** Element Web grants Element Call its OpenID token without asking; one fresh token per request. */
  public override askOpenID(observer: SimpleObservable<IOpenIDUpdate>): void {
    this.record("openid", this.client.getOpenIdToken()).then(
      (token) => observer.update({ state: OpenIDRequestState.Allowed, token }),
      () => observer.update({ state: OpenIDRequestState.Blocked }),
    );
  }

  /** MSC4515: the homeserver's MSC4143 transports (our control plane's lk-jwt-service endpoints). */
  public override async getRtcTransports(): Promise<IRtcTransportsResult> {
    const transports = await this.record("rtc transports", this.client._unstable_getRTCTransports());
    return { rtc_transports: transports as unknown as IRtcTransportsResult["rtc_transports"] };
  }

  public override getKnownRooms(): string[] {
    return this.client.getRooms().map((room) => room.roomId);
  }

  /** Homeserver errors reach the widget as Matrix errors (it tells rate limits and unknown delay ids apart). */
  public override processError(error: unknown): IWidgetApiErrorResponseDataDetails | undefined {
    return error instanceof MatrixError ? { matrix_api_error: error.asWidgetApiErrorData() } : undefined;
  }
}
