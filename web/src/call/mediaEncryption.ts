import { BaseKeyProvider, createKeyMaterialFromBuffer, isE2EESupported, type E2EEOptions } from "livekit-client";
import type { MatrixClient, Room as MatrixRoom } from "matrix-js-sdk";
import { MatrixRTCSessionEvent, type MatrixRTCSession } from "matrix-js-sdk/lib/matrixrtc";
import { appError, AppErrorException } from "../errors/errors";

/**
 * End-to-end encrypted call media, with Element Call's per-participant key scheme: the call is
 * encrypted when its case room is (as Element Call decides, and so interoperable with it). Every
 * participant draws its own media key; matrix-js-sdk's MatrixRTC session sends it to the others in
 * Olm-encrypted to-device messages (`io.element.call.encryption_keys`), rotates it when someone
 * leaves, and hands each key it holds, with the LiveKit identity it belongs to, to this provider.
 * livekit-client encrypts and decrypts the frames in its worker with them. Neither control nor the
 * gateway nor LiveKit ever sees a key; the gateway's ladder and fallback need only RTP headers.
 *
 * One `CallMediaKeys` per call; each LiveKit room (a re-join makes a new one) gets a fresh provider
 * and worker, fed with every key the session already holds.
 */

/** Frame encryption as Element Call configures it (its `MatrixKeyProvider`), so frames interoperate. */
const KEY_PROVIDER_OPTIONS = { ratchetWindowSize: 10, keyringSize: 256 };

export const NOT_SUPPORTED = "This case is end-to-end encrypted, and this browser cannot encrypt call media.";
export const NO_CRYPTO = "This case is end-to-end encrypted, and end-to-end encryption could not be started in this browser.";

/** Whether a call in this case room is end-to-end encrypted: when the room is. */
export function callIsEncrypted(room: MatrixRoom): boolean {
  return room.hasEncryptionStateEvent();
}

/** Feeds the MatrixRTC session's media keys to livekit-client, by LiveKit identity. */
class MatrixKeyProvider extends BaseKeyProvider {
  private session: MatrixRTCSession | undefined;

  constructor() {
    super(KEY_PROVIDER_OPTIONS);
  }

  attach(session: MatrixRTCSession): void {
    this.session = session;
    session.on(MatrixRTCSessionEvent.EncryptionKeyChanged, this.onKey);
    // Keys the session received before this room existed (another participant's, or ours from
    // the room a re-join replaces).
    session.reemitEncryptionKeys();
  }

  detach(): void {
    this.session?.off(MatrixRTCSessionEvent.EncryptionKeyChanged, this.onKey);
    this.session = undefined;
  }

  private onKey = (key: Uint8Array<ArrayBuffer>, index: number, _member: unknown, identity: string): void => {
    void createKeyMaterialFromBuffer(key.buffer.slice(key.byteOffset, key.byteOffset + key.byteLength)).then(
      (material) => this.onSetEncryptionKey(material, identity, index),
      (err: unknown) => console.error(`A media key for ${identity} could not be imported`, err),
    );
  };
}

export class CallMediaKeys {
  private readonly session: MatrixRTCSession;
  private provider: MatrixKeyProvider | undefined;
  private worker: Worker | undefined;

  /** Throws an AppErrorException (category "media") when this browser cannot take part. */
  constructor(client: MatrixClient, session: MatrixRTCSession) {
    if (!client.getCrypto()) throw new AppErrorException(appError("media", NO_CRYPTO));
    if (!isE2EESupported()) throw new AppErrorException(appError("media", NOT_SUPPORTED));
    this.session = session;
  }

  /** The options of a new LiveKit room: its own provider and worker; the previous room's end. */
  forNewRoom(): E2EEOptions {
    this.dispose();
    this.provider = new MatrixKeyProvider();
    this.worker = new Worker(new URL("livekit-client/e2ee-worker", import.meta.url), { type: "module" });
    this.provider.attach(this.session);
    return { keyProvider: this.provider, worker: this.worker };
  }

  dispose(): void {
    this.provider?.detach();
    this.provider = undefined;
    this.worker?.terminate();
    this.worker = undefined;
  }
}
