/**
 * A raw WebSocket device client for relay tests: registers a device over HTTP, binds a
 * connection by signing the challenge, sends binary SEND frames and collects DELIVER
 * and JSON frames. Deliberately not the SDK: these tests exercise the wire protocol.
 */
import WebSocket from 'ws';
import { nobleBackend } from '../../crypto/primitives/noble.js';
import { systemRandom } from '../../crypto/primitives/random.js';
import { encodeBase64url, decodeBase64url } from '../../protocol/base64url.js';
import { type DeliverFrame, decodeDeliver, encodeSend } from '../../protocol/envelopes.js';
import { deviceAuthTranscript, deviceRegistrationTranscript } from '../../protocol/transcripts.js';

export type JsonFrame = { type: string; [k: string]: unknown };

export interface DeviceIdentity {
  readonly userId: string;
  readonly deviceId: string;
  readonly seed: Uint8Array;
  readonly publicKey: Uint8Array;
  readonly token: string;
}

export function newIdentity(userId: string, deviceId: string, token: string): DeviceIdentity {
  const seed = systemRandom(32);
  return { userId, deviceId, seed, publicKey: nobleBackend.ed25519PublicKey(seed), token };
}

export async function registerDevice(baseUrl: string, id: DeviceIdentity): Promise<void> {
  const signature = nobleBackend.ed25519Sign(id.seed, deviceRegistrationTranscript(id.userId, id.deviceId, id.publicKey));
  const res = await fetch(`${baseUrl}/v1/devices`, {
    method: 'POST',
    headers: { authorization: `Bearer ${id.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ deviceId: id.deviceId, identityKey: encodeBase64url(id.publicKey), signature: encodeBase64url(signature) }),
  });
  if (res.status !== 201 && res.status !== 200) throw new Error(`register ${id.deviceId}: ${res.status} ${await res.text()}`);
}

export class RawClient {
  readonly json: JsonFrame[] = [];
  readonly delivered: DeliverFrame[] = [];
  closeCode: number | undefined;
  private waiters: Array<() => void> = [];
  private nextId = 1;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) this.delivered.push(decodeDeliver(new Uint8Array(data)));
      else this.json.push(JSON.parse(data.toString('utf8')) as JsonFrame);
      this.wake();
    });
    ws.on('close', (code: number) => {
      this.closeCode = code;
      this.wake();
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  static async connect(wsUrl: string, id: DeviceIdentity, opts: { autoAuth?: boolean } = {}): Promise<RawClient> {
    const ws = new WebSocket(wsUrl);
    const c = new RawClient(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    if (opts.autoAuth !== false) {
      const challenge = await c.waitJson((f) => f.type === 'challenge');
      const nonce = decodeBase64url(challenge.nonce as string)!;
      const signature = nobleBackend.ed25519Sign(id.seed, deviceAuthTranscript(nonce, id.userId, id.deviceId));
      c.sendJson({ type: 'auth', token: id.token, deviceId: id.deviceId, signature: encodeBase64url(signature) });
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

  sendJson(f: unknown): void {
    this.ws.send(JSON.stringify(f));
  }

  /** Sends one SEND frame; returns its request id. */
  send(recipientUserId: string, targets: Array<{ deviceId: string; payload: Uint8Array }>, opts: { envelopeId?: Uint8Array; ttlSeconds?: number } = {}): { id: number; envelopeId: Uint8Array } {
    const id = this.nextId++;
    const envelopeId = opts.envelopeId ?? systemRandom(16);
    this.ws.send(encodeSend({ id, envelopeId, ttlSeconds: opts.ttlSeconds ?? 3600, recipientUserId, targets }));
    return { id, envelopeId };
  }

  async sendAndWait(recipientUserId: string, targets: Array<{ deviceId: string; payload: Uint8Array }>, opts: { envelopeId?: Uint8Array; ttlSeconds?: number } = {}): Promise<JsonFrame> {
    const { id } = this.send(recipientUserId, targets, opts);
    return this.waitJson((f) => (f.type === 'stored' || f.type === 'error') && f.id === id);
  }

  ack(seq: number): void {
    this.sendJson({ type: 'ack', seq });
  }

  close(): void {
    this.ws.close();
  }

  terminate(): void {
    this.ws.terminate();
  }
}
