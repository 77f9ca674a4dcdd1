/**
 * A raw WebSocket device connection for load generation: binds itself by signing the
 * relay's challenge, then sends binary SEND frames and hands DELIVER frames and JSON
 * answers to the caller without decoding more than it needs (the load generator shares
 * two cores with the relay and the database, so every microsecond here is taken from
 * them).
 *
 * Frames are sent with an all-zero WebSocket mask. RFC 6455 wants a random mask from
 * browsers to defeat cache poisoning through proxies, which is irrelevant on loopback;
 * the relay unmasks every frame either way, so its work is unchanged while the
 * generator skips an XOR pass and a copy per frame.
 */
import WebSocket from 'ws';
import { defaultBackend } from '../../crypto/primitives/index.js';
import { decodeBase64url, encodeBase64url } from '../../protocol/base64url.js';
import { BINARY_FRAME, encodeSend } from '../../protocol/envelopes.js';
import { FEATURE_STORED_BATCH, STORED_BATCH_VERSION } from '../../protocol/stored-batch.js';
import { relayOrigin } from '../../protocol/origin.js';
import { deviceAuthTranscript } from '../../protocol/transcripts.js';

/** A registered device as the load generator knows it (plain data: crosses IPC). */
export interface BenchDevice {
  readonly userId: string;
  readonly deviceId: string;
  /** Ed25519 identity seed, hex. */
  readonly seed: string;
  readonly token: string;
}

export interface DeviceHandlers {
  /** A DELIVER frame (the socket's buffer; valid during the call only). */
  onDeliver(frame: Buffer): void;
  /** A STORED_BATCH frame carrying `count` STORED answers (read no further). */
  onStoredBatch?(count: number): void;
  /** A JSON frame after authentication, undecoded. */
  onText(text: string): void;
  /** A JSON frame after authentication as its bytes, instead of onText: for frames told
   * apart by their first bytes, without decoding the rest (valid during the call only). */
  onTextFrame?(frame: Buffer): void;
}

const SETUP_TIMEOUT_MS = 30_000;

/** DELIVER layout offsets (protocol/envelopes.ts): type u8, seq u64, envelope id 16 bytes. */
const DELIVER_SEQ_OFFSET = 1;
const DELIVER_SENDER_OFFSET = 1 + 8 + 16;

export function deliverSeq(frame: Buffer): number {
  return frame.readUInt32BE(DELIVER_SEQ_OFFSET) * 0x1_0000_0000 + frame.readUInt32BE(DELIVER_SEQ_OFFSET + 4);
}

/** Offset of the payload in a DELIVER frame: after sender user, sender device, two u64 times and the u32 length. */
export function deliverPayloadOffset(frame: Buffer): number {
  let p = DELIVER_SENDER_OFFSET;
  p += 1 + (frame[p] as number);
  p += 1 + (frame[p] as number);
  return p + 8 + 8 + 4;
}

export class DeviceSocket {
  private handlers: DeviceHandlers | undefined;
  private setupWaiter: ((text: string) => void) | undefined;
  /** JSON frames that arrived during setup before anyone waited for them. */
  private readonly setupQueue: string[] = [];
  private setupDone = false;
  private closed = false;

  private constructor(
    readonly device: BenchDevice,
    private readonly ws: WebSocket,
  ) {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) {
        if (data[0] !== BINARY_FRAME.STORED_BATCH) this.handlers?.onDeliver(data);
        else if (data.length >= 4 && data[1] === STORED_BATCH_VERSION) this.handlers?.onStoredBatch?.(data.readUInt16BE(2));
        else throw new Error(`${device.userId}/${device.deviceId}: a STORED_BATCH frame of an unknown version or too short`);
        return;
      }
      if (this.setupDone && this.handlers?.onTextFrame) {
        this.handlers.onTextFrame(data);
        return;
      }
      const text = data.toString('utf8');
      if (this.setupDone) this.handlers?.onText(text);
      else if (this.setupWaiter) this.setupWaiter(text);
      else this.setupQueue.push(text);
    });
    ws.on('close', () => {
      this.closed = true;
    });
  }

  /**
   * Connects and authenticates; resolves once the relay has attached the device's
   * delivery stream (its first QUEUE_EMPTY), so envelopes sent to it from now on are
   * pushed live.
   */
  static async connect(wsUrl: string, device: BenchDevice): Promise<DeviceSocket> {
    const ws = new WebSocket(wsUrl, {
      perMessageDeflate: false,
      skipUTF8Validation: true,
      generateMask: () => undefined,
    });
    const s = new DeviceSocket(device, ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    ws.on('error', () => undefined);
    const challenge = await s.nextJson();
    if (challenge.type !== 'challenge' || typeof challenge.nonce !== 'string') throw new Error(`expected a challenge, got ${JSON.stringify(challenge)}`);
    const nonce = decodeBase64url(challenge.nonce);
    if (!nonce) throw new Error('bad challenge nonce');
    const origin = relayOrigin(wsUrl);
    if (origin === undefined) throw new Error(`not a relay URL: ${wsUrl}`);
    const signature = defaultBackend.ed25519Sign(Buffer.from(device.seed, 'hex'), deviceAuthTranscript(nonce, device.userId, device.deviceId, origin));
    // STORED answers as STORED_BATCH frames: one binary frame per commit, not one JSON each.
    const features = [FEATURE_STORED_BATCH];
    ws.send(JSON.stringify({ type: 'auth', token: device.token, deviceId: device.deviceId, origin, signature: encodeBase64url(signature), features }));
    for (;;) {
      const f = await s.nextJson();
      if (f.type === 'queue_empty') break;
      if (f.type === 'error') throw new Error(`auth ${device.userId}/${device.deviceId}: ${JSON.stringify(f)}`);
    }
    s.setupDone = true;
    return s;
  }

  private nextJson(): Promise<{ type?: unknown; [k: string]: unknown }> {
    const queued = this.setupQueue.shift();
    if (queued !== undefined) return Promise.resolve(JSON.parse(queued) as { type?: unknown });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.setupWaiter = undefined;
        reject(new Error(`${this.device.userId}/${this.device.deviceId}: no answer from the relay during setup`));
      }, SETUP_TIMEOUT_MS);
      this.setupWaiter = (text) => {
        clearTimeout(timer);
        this.setupWaiter = undefined;
        resolve(JSON.parse(text) as { type?: unknown });
      };
    });
  }

  listen(handlers: DeviceHandlers): void {
    this.handlers = handlers;
  }

  get isOpen(): boolean {
    return !this.closed && this.ws.readyState === WebSocket.OPEN;
  }

  sendBinary(frame: Buffer): void {
    this.ws.send(frame, { binary: true });
  }

  sendText(text: string): void {
    this.ws.send(text);
  }

  close(): Promise<void> {
    if (this.closed || this.ws.readyState === WebSocket.CLOSED) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.ws.terminate();
        resolve();
      }, 2000);
      this.ws.once('close', () => {
        clearTimeout(t);
        resolve();
      });
      this.ws.close();
    });
  }
}

/**
 * SEND frames to one recipient device with a fixed-size payload, made from one encoded
 * template: each frame is a copy with its request id, envelope id and (optionally) a
 * float64 timestamp in the payload's first 8 bytes patched in.
 */
export class SendFrames {
  private readonly template: Buffer;
  private readonly payloadOffset: number;
  private counter = 0;
  private readonly idPrefix: Buffer;

  constructor(recipient: BenchDevice, payloadBytes: number, ttlSeconds = 3600) {
    const payload = Buffer.alloc(payloadBytes);
    // Incompressible content, as ciphertext would be.
    for (let i = 0; i < payloadBytes; i++) payload[i] = (Math.random() * 256) | 0;
    const encoded = encodeSend({
      id: 0,
      envelopeId: new Uint8Array(16),
      ttlSeconds,
      recipientUserId: recipient.userId,
      targets: [{ deviceId: recipient.deviceId, payload }],
    });
    this.template = Buffer.from(encoded.buffer, encoded.byteOffset, encoded.byteLength);
    this.payloadOffset = this.template.length - payloadBytes;
    this.idPrefix = Buffer.alloc(8);
    for (let i = 0; i < 8; i++) this.idPrefix[i] = (Math.random() * 256) | 0;
  }

  /** The next frame: a fresh buffer (the socket may hold it until written). */
  next(timestampMs?: number): Buffer {
    const n = ++this.counter;
    const b = Buffer.allocUnsafe(this.template.length);
    this.template.copy(b);
    b.writeUInt32BE(n >>> 0, 1);
    // Envelope id (offset 5, 16 bytes): a random per-connection prefix and a counter.
    this.idPrefix.copy(b, 5);
    b.writeUInt32BE(Math.floor(n / 0x1_0000_0000), 13);
    b.writeUInt32BE(n >>> 0, 17);
    if (timestampMs !== undefined) b.writeDoubleLE(timestampMs, this.payloadOffset);
    return b;
  }
}
