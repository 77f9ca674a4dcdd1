/**
 * A raw WebSocket device client for mailbox tests: binds a connection by signing the
 * relay's challenge, sends binary SEND frames, and records every DELIVER and JSON frame
 * in arrival order. Deliberately not the SDK: these tests exercise the wire protocol.
 * Built on `ws` (not the runtime's WebSocket) so that a test can stall the reader by
 * pausing the underlying TCP socket.
 */
import WebSocket from 'ws';
import { systemRandom } from '../../crypto/primitives/random.js';
import { decodeBase64url, encodeBase64url } from '../../protocol/base64url.js';
import { type DeliverFrame, type SendTarget, encodeSend } from '../../protocol/envelopes.js';
import { decodeServerFrame } from '../../protocol/frames.js';
import { FEATURE_STORED_BATCH, type StoredFrame } from '../../protocol/stored-batch.js';
import type { TestDevice } from '../helpers/device.js';

export type JsonFrame = { type: string; [k: string]: any };

/** Every frame received, in arrival order: JSON frames and decoded DELIVERs. */
export type Received = { readonly kind: 'json'; readonly frame: JsonFrame } | { readonly kind: 'deliver'; readonly frame: DeliverFrame };

export interface ConnectOptions {
  /** Answer the challenge and wait for auth_ok (default true). */
  readonly auth?: boolean;
  /** ACK the highest delivered sequence once per burst of incoming frames (default false). */
  readonly autoAck?: boolean;
  /** Ask for STORED answers in STORED_BATCH frames (default false: JSON, as before). */
  readonly storedBatch?: boolean;
}

export interface SendOptions {
  readonly envelopeId?: Uint8Array;
  readonly ttlSeconds?: number;
}

export class RawClient {
  readonly json: JsonFrame[] = [];
  readonly delivered: DeliverFrame[] = [];
  readonly received: Received[] = [];
  /** The answers of each STORED_BATCH frame, in arrival order (each answer is also put in
   * `json` as the `stored` frame it stands for, so that answer() finds it). */
  readonly storedBatches: StoredFrame[][] = [];
  closeCode: number | undefined;
  readonly closed: Promise<number>;
  /** Highest sequence this client has ACKed. */
  ackedThrough = 0;
  private waiters: Array<() => void> = [];
  private nextId = 1;
  private ackScheduled = false;

  private constructor(
    readonly ws: WebSocket,
    private readonly autoAck: boolean,
  ) {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) {
        // The SDK's decoder: DELIVER or STORED_BATCH, anything else throws.
        const frame = decodeServerFrame(new Uint8Array(data), true);
        if (frame.type === 'stored_batch') {
          this.storedBatches.push([...frame.answers]);
          for (const a of frame.answers) this.json.push({ ...a, recipients: a.recipients.map((r) => ({ ...r })) });
          this.wake();
          return;
        }
        if (frame.type !== 'deliver') throw new Error(`unexpected binary frame ${frame.type}`);
        this.delivered.push(frame);
        this.received.push({ kind: 'deliver', frame });
        if (this.autoAck) this.scheduleAck();
      } else {
        const frame = JSON.parse(data.toString('utf8')) as JsonFrame;
        this.json.push(frame);
        this.received.push({ kind: 'json', frame });
        if (this.autoAck && frame.type === 'expired') this.scheduleAck();
      }
      this.wake();
    });
    this.closed = new Promise((resolve) => {
      ws.on('close', (code: number) => {
        this.closeCode = code;
        resolve(code);
        this.wake();
      });
    });
    // Connection errors surface through `closed` and failed waits.
    ws.on('error', () => undefined);
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  static async connect(wsUrl: string, device: TestDevice, token: string, opts: ConnectOptions = {}): Promise<RawClient> {
    const ws = new WebSocket(wsUrl);
    const c = new RawClient(ws, opts.autoAck ?? false);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const challenge = await c.waitJson((f) => f.type === 'challenge');
    if (opts.auth !== false) {
      const nonce = decodeBase64url(String(challenge.nonce));
      if (!nonce) throw new Error('challenge nonce is not base64url');
      const auth = device.authFrame(nonce, token, wsUrl);
      c.sendJson(opts.storedBatch ? { ...auth, features: [FEATURE_STORED_BATCH] } : auth);
      const r = await c.waitJson((f) => f.type === 'auth_ok' || f.type === 'error');
      if (r.type !== 'auth_ok') throw new Error(`auth failed: ${JSON.stringify(r)}`);
    }
    return c;
  }

  /** Resolves once `pred` holds (checked on every incoming frame), or rejects after timeoutMs. */
  async until(pred: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 250));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  async waitJson(pred: (f: JsonFrame) => boolean, timeoutMs = 20_000): Promise<JsonFrame> {
    let found: JsonFrame | undefined;
    await this.until(() => (found = this.json.find(pred)) !== undefined, 'a JSON frame', timeoutMs);
    return found!;
  }

  /** Waits until at least `n` envelopes have been delivered on this connection. */
  async waitDelivered(n: number, timeoutMs = 30_000): Promise<DeliverFrame[]> {
    await this.until(() => this.delivered.length >= n || this.closeCode !== undefined, `${n} deliveries`, timeoutMs);
    if (this.delivered.length < n) throw new Error(`connection closed (${this.closeCode}) after ${this.delivered.length} of ${n} deliveries`);
    return this.delivered;
  }

  /**
   * The delivery stream as seen by the device, in arrival order: `deliver <seq>`,
   * `expired <from>-<to>` and `queue_empty <through>` (answers to requests left out).
   */
  stream(): string[] {
    const out: string[] = [];
    for (const r of this.received) {
      if (r.kind === 'deliver') out.push(`deliver ${r.frame.seq}`);
      else if (r.frame.type === 'expired') out.push(`expired ${r.frame.from}-${r.frame.to}`);
      else if (r.frame.type === 'queue_empty') out.push(`queue_empty ${r.frame.through}`);
    }
    return out;
  }

  /** Error frames received, in order. */
  errors(): JsonFrame[] {
    return this.json.filter((f) => f.type === 'error');
  }

  /** Waits for the close (hang guard) and returns its code. */
  async waitClosed(timeoutMs = 15_000): Promise<number> {
    await this.until(() => this.closeCode !== undefined, 'the connection to close', timeoutMs);
    return this.closeCode!;
  }

  sendJson(f: unknown): void {
    this.ws.send(JSON.stringify(f));
  }

  sendBinary(bytes: Uint8Array): void {
    this.ws.send(bytes, { binary: true });
  }

  /** Sends one SEND frame; returns its request id and envelope id. */
  send(recipientUserId: string, targets: readonly SendTarget[], opts: SendOptions = {}): { id: number; envelopeId: Uint8Array } {
    const id = this.nextId++;
    const envelopeId = opts.envelopeId ?? systemRandom(16);
    this.sendBinary(encodeSend({ id, envelopeId, ttlSeconds: opts.ttlSeconds ?? 3600, recipientUserId, targets }));
    return { id, envelopeId };
  }

  /** Answers (STORED or error) received so far, counted incrementally. */
  private answered = 0;
  private answerScan = 0;

  answeredCount(): number {
    for (; this.answerScan < this.json.length; this.answerScan++) {
      const t = this.json[this.answerScan]!.type;
      if (t === 'stored' || (t === 'error' && this.json[this.answerScan]!.id !== undefined)) this.answered++;
    }
    return this.answered;
  }

  /**
   * Sends `count` SENDs made by `make(i)`, keeping at most `window` of them unanswered,
   * as a real client does (the relay bounds SENDs awaiting commit per connection).
   * Resolves once all are sent, or early when the connection closes.
   */
  async sendWindowed(
    count: number,
    make: (i: number) => { recipientUserId: string; targets: readonly SendTarget[]; opts?: SendOptions },
    window = 256,
    onSent?: (i: number, sent: { id: number; envelopeId: Uint8Array }) => void,
  ): Promise<void> {
    const base = this.answeredCount();
    for (let i = 0; i < count; i++) {
      if (this.closeCode !== undefined) return;
      if (i - (this.answeredCount() - base) >= window) {
        await this.until(() => this.closeCode !== undefined || i - (this.answeredCount() - base) < window, 'room in the send window', 60_000);
        if (this.closeCode !== undefined) return;
      }
      const m = make(i);
      const sent = this.send(m.recipientUserId, m.targets, m.opts);
      onSent?.(i, sent);
    }
  }

  /** The STORED or error answer to request `id`. */
  answer(id: number, timeoutMs = 20_000): Promise<JsonFrame> {
    return this.waitJson((f) => (f.type === 'stored' || f.type === 'error') && f.id === id, timeoutMs);
  }

  async sendAndWait(recipientUserId: string, targets: readonly SendTarget[], opts: SendOptions = {}): Promise<JsonFrame> {
    return this.answer(this.send(recipientUserId, targets, opts).id);
  }

  /** A ping round trip: everything sent before it has been read by the relay. */
  async ping(timeoutMs = 20_000): Promise<void> {
    const id = this.nextId++;
    this.sendJson({ type: 'ping', id });
    await this.waitJson((f) => f.type === 'pong' && f.id === id, timeoutMs);
  }

  ack(seq: number): void {
    if (seq > this.ackedThrough) this.ackedThrough = seq;
    this.sendJson({ type: 'ack', seq });
  }

  /** Acks through the highest sequence seen (delivered or announced expired). */
  ackAll(): void {
    let top = this.ackedThrough;
    for (const r of this.received) {
      if (r.kind === 'deliver') top = Math.max(top, r.frame.seq);
      else if (r.frame.type === 'expired') top = Math.max(top, Number(r.frame.to));
    }
    if (top > this.ackedThrough) this.ack(top);
  }

  private scheduleAck(): void {
    if (this.ackScheduled) return;
    this.ackScheduled = true;
    setImmediate(() => {
      this.ackScheduled = false;
      if (this.ws.readyState === WebSocket.OPEN) this.ackAll();
    });
  }

  /** Stops reading from the TCP socket: the relay's writes back up, as with a stalled device. */
  pause(): void {
    (this.ws as unknown as { _socket: { pause(): void } })._socket.pause();
  }

  resume(): void {
    (this.ws as unknown as { _socket: { resume(): void } })._socket.resume();
  }

  close(): void {
    this.ws.close();
  }

  terminate(): void {
    this.ws.terminate();
  }
}
