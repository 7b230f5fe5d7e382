/**
 * A minimal Matrix client that hosts stock Element Call as a widget, like Element Web does:
 * it signs in to the homeserver with matrix-js-sdk, embeds Element Call (the npm package
 * @element-hq/element-call-embedded, unmodified) in an iframe and answers its widget API
 * requests with ClientWidgetApi and ElementCallDriver. Built for the browser at test time
 * (see serve.ts); the test drives it through `window.__ecHost`.
 */
import {
  ClientEvent,
  createClient,
  EventTimeline,
  RoomEvent,
  RoomStateEvent,
  SyncState,
  type IRoomTimelineData,
  type MatrixClient,
  type MatrixEvent,
  type Room,
  type RoomState,
} from "matrix-js-sdk";
import { ClientWidgetApi, Widget, WidgetApiFromWidgetAction, type IRoomEvent, type IWidgetApiRequest } from "matrix-widget-api";
import { ElementCallDriver } from "./driver";

export interface EcHostOptions {
  homeserverUrl: string;
  user: string;
  password: string;
  /** Name of the (joined) room to hold the call in. */
  roomName: string;
  /** Element Call's `intent` URL parameter. */
  intent: "start_call" | "join_existing";
  /** Where Element Call's index.html is served. */
  elementCallUrl: string;
}

export interface EcHostSession {
  userId: string;
  deviceId: string;
  roomId: string;
  widgetUrl: string;
}

export interface EcHostState {
  /** Capabilities negotiated: the widget API is ready. */
  ready: boolean;
  /** Element Call asked to be closed (io.element.close) and the host removed it. */
  closed: boolean;
  /** Every from-widget action seen, in order (repeats collapsed). */
  actions: string[];
  requested: string[];
  /** Homeserver requests made for the widget. */
  calls: string[];
  errors: string[];
}

export interface EcHost {
  start(options: EcHostOptions): Promise<EcHostSession>;
  state(): EcHostState;
  /** Removes the widget and signs out. */
  close(): Promise<void>;
}

declare global {
  interface Window {
    __ecHost?: EcHost;
  }
}

/** Element Call actions a host must acknowledge (Element Web answers each of them). */
const ACKNOWLEDGED: Record<string, Record<string, unknown>> = {
  "io.element.join": {},
  "im.vector.hangup": {},
  "io.element.close": {},
  "io.element.device_mute": {},
  [WidgetApiFromWidgetAction.UpdateAlwaysOnScreen]: { success: true },
};

function waitForSync(client: MatrixClient): Promise<void> {
  return new Promise((resolve, reject) => {
    const onSync = (state: SyncState): void => {
      if (state === SyncState.Prepared || state === SyncState.Syncing) {
        client.off(ClientEvent.Sync, onSync);
        resolve();
      } else if (state === SyncState.Error) {
        client.off(ClientEvent.Sync, onSync);
        reject(new Error("initial sync failed"));
      }
    };
    client.on(ClientEvent.Sync, onSync);
  });
}

function raw(event: MatrixEvent): IRoomEvent {
  return event.getEffectiveEvent() as unknown as IRoomEvent;
}

class Host implements EcHost {
  private client: MatrixClient | undefined;
  private api: ClientWidgetApi | undefined;
  private driver: ElementCallDriver | undefined;
  private iframe: HTMLIFrameElement | undefined;
  private ready = false;
  private closing = false;
  private closed = false;
  private readonly actions: string[] = [];
  private readonly errors: string[] = [];

  public async start(options: EcHostOptions): Promise<EcHostSession> {
    const anon = createClient({ baseUrl: options.homeserverUrl });
    const login = await anon.loginRequest({
      type: "m.login.password",
      identifier: { type: "m.id.user", user: options.user },
      password: options.password,
      initial_device_display_name: "koinos-rtc Element Call widget host (e2e)",
    });
    const client = createClient({
      baseUrl: options.homeserverUrl,
      accessToken: login.access_token,
      userId: login.user_id,
      deviceId: login.device_id,
    });
    this.client = client;
    const synced = waitForSync(client);
    // Olm, as Element Web has: in an encrypted room Element Call hands its media keys to the
    // host to send encrypted to each device, and reads the others' from it (in memory: the host
    // lives as long as its page).
    await client.initRustCrypto({ useIndexedDB: false });
    await client.startClient({ initialSyncLimit: 20, lazyLoadMembers: false });
    await synced;

    const room = client
      .getRooms()
      .find((r: Room) => r.name === options.roomName && r.getMyMembership() === "join");
    if (!room) throw new Error(`${login.user_id} is not in a room named "${options.roomName}"`);
    const roomId = room.roomId;
    const encrypted = room.hasEncryptionStateEvent();

    const widgetId = `element-call-${Math.random().toString(36).slice(2)}`;
    const url = new URL(options.elementCallUrl);
    // As Element Web does: the widget plumbing in the query, the rest in the fragment.
    url.search = new URLSearchParams({ widgetId, parentUrl: window.location.href.split("#")[0] ?? "" }).toString();
    url.hash = `?${new URLSearchParams({
      roomId,
      userId: login.user_id,
      deviceId: login.device_id,
      baseUrl: options.homeserverUrl,
      intent: options.intent,
      skipLobby: "true",
      confineToRoom: "true",
      header: "none",
      perParticipantE2EE: String(encrypted),
      lang: "en",
      theme: "dark",
      fontScale: "1",
    }).toString()}`;
    const widgetUrl = url.toString();

    const iframe = document.createElement("iframe");
    iframe.id = "element-call";
    iframe.title = "Element Call";
    iframe.allow = "camera; microphone; display-capture; autoplay; clipboard-write; fullscreen";
    document.body.appendChild(iframe);
    this.iframe = iframe;

    const driver = new ElementCallDriver(client, roomId);
    this.driver = driver;
    const widget = new Widget({
      id: widgetId,
      creatorUserId: login.user_id,
      name: "Element Call",
      type: "m.call",
      url: widgetUrl,
      waitForIframeLoad: false,
      data: {},
    });
    const api = new ClientWidgetApi(widget, iframe, driver);
    this.api = api;
    api.setViewedRoomId(roomId);
    api.transport.on("message", (ev: CustomEvent<IWidgetApiRequest>) => {
      const action = ev.detail.action;
      if (this.actions[this.actions.length - 1] !== action) this.actions.push(action);
    });
    for (const [action, reply] of Object.entries(ACKNOWLEDGED)) {
      api.on(`action:${action}`, (ev: CustomEvent<IWidgetApiRequest>) => {
        ev.preventDefault();
        api.transport.reply(ev.detail, reply);
      });
    }
    // Like Element Web: once Element Call has left the call it asks to be closed, and goes.
    // It stops listening as it asks, so nothing more is fed to it from then on.
    api.on(`action:io.element.close`, () => {
      this.closing = true;
      window.setTimeout(() => {
        api.stop();
        iframe.remove();
        this.closed = true;
      }, 0);
    });
    api.on("ready", () => {
      this.ready = true;
    });
    api.on("error:preparing", (err: unknown) => {
      this.errors.push(`preparing: ${String(err)}`);
    });

    // What the homeserver sends reaches the widget, as the widget API expects of a client.
    client.on(RoomEvent.Timeline, (ev: MatrixEvent, r: Room | undefined, toStart: boolean | undefined, _removed: boolean, data: IRoomTimelineData) => {
      if (!this.live() || toStart || !data.liveEvent || r?.roomId !== roomId || ev.status !== null) return;
      api.feedEvent(raw(ev)).catch((err: unknown) => this.errors.push(`feedEvent: ${String(err)}`));
    });
    client.on(RoomStateEvent.Events, (ev: MatrixEvent, state: RoomState) => {
      if (!this.live() || state.roomId !== roomId) return;
      if (state !== client.getRoom(roomId)?.getLiveTimeline().getState(EventTimeline.FORWARDS)) return;
      api.feedStateUpdate(raw(ev)).catch((err: unknown) => this.errors.push(`feedStateUpdate: ${String(err)}`));
    });
    client.on(ClientEvent.ToDeviceEvent, (ev: MatrixEvent) => {
      if (!this.live()) return;
      // Decrypted by the host's crypto, as Element Web feeds them: the clear type and content.
      const message = { type: ev.getType(), sender: ev.getSender() ?? "", content: ev.getContent() };
      api.feedToDevice(message, ev.isEncrypted()).catch((err: unknown) => this.errors.push(`feedToDevice: ${String(err)}`));
    });

    iframe.src = widgetUrl;
    return { userId: login.user_id, deviceId: login.device_id, roomId, widgetUrl };
  }

  /** Whether the widget is there to be fed events. */
  private live(): boolean {
    return this.ready && !this.closing;
  }

  public state(): EcHostState {
    return {
      ready: this.ready,
      closed: this.closed,
      actions: [...this.actions],
      requested: [...(this.driver?.log.requested ?? [])],
      calls: [...(this.driver?.log.calls ?? [])],
      errors: [...this.errors, ...(this.driver?.log.errors ?? [])],
    };
  }

  public async close(): Promise<void> {
    this.api?.stop();
    this.iframe?.remove();
    const client = this.client;
    if (!client) return;
    client.stopClient();
    await client.logout(true).catch(() => undefined);
  }
}

window.__ecHost = new Host();
document.title = "Element Call widget host";
