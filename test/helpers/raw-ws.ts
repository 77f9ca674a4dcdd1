/**
 * A WebSocket client made by hand on a TCP socket, for tests that need what a library
 * won't do: stop in the middle of a frame, or vanish without a close. It performs the
 * RFC 6455 opening handshake (checking Sec-WebSocket-Accept), reads the relay's frames
 * (unmasked, unfragmented) and writes masked client frames, whole or cut short.
 */
import crypto from 'node:crypto';
import net from 'node:net';
import { decodeBase64url } from '../../protocol/base64url.js';
import type { TestDevice } from './device.js';

/** RFC 6455 section 1.3: the GUID appended to the key for Sec-WebSocket-Accept. */
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export const OPCODE = { text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa } as const;

/** A masked client frame (RFC 6455 section 5.2), FIN set. */
export function clientFrame(opcode: number, payload: Uint8Array): Buffer {
  const len = payload.length;
  const head = len < 126 ? 2 : len < 65536 ? 4 : 10;
  const out = Buffer.alloc(head + 4 + len);
  out[0] = 0x80 | opcode;
  if (len < 126) out[1] = 0x80 | len;
  else if (len < 65536) {
    out[1] = 0x80 | 126;
    out.writeUInt16BE(len, 2);
  } else {
    out[1] = 0x80 | 127;
    out.writeBigUInt64BE(BigInt(len), 2);
  }
  const mask = crypto.randomBytes(4);
  mask.copy(out, head);
  for (let i = 0; i < len; i++) out[head + 4 + i] = payload[i]! ^ mask[i & 3]!;
  return out;
}

export class HandmadeWs {
  /** Text frames received, parsed as JSON. */
  readonly json: Array<Record<string, any>> = [];
  private buf: Buffer = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  closed = false;

  private constructor(
    readonly socket: net.Socket,
    /** The ws:// URL connected to (the origin a device signs). */
    readonly url: string,
  ) {
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.parse();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  /** Connects and completes the opening handshake on `path`. */
  static async connect(port: number, path = '/v1/ws', host = '127.0.0.1'): Promise<HandmadeWs> {
    const socket = net.connect(port, host);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const key = crypto.randomBytes(16).toString('base64');
    socket.write(
      `GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
    let head = Buffer.alloc(0);
    const rest = await new Promise<Buffer>((resolve, reject) => {
      const onData = (d: Buffer): void => {
        head = Buffer.concat([head, d]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return;
        socket.off('data', onData);
        const text = head.subarray(0, end).toString('latin1');
        const accept = crypto.createHash('sha1').update(key + WS_GUID).digest('base64');
        if (!text.startsWith('HTTP/1.1 101')) reject(new Error(`upgrade refused: ${text}`));
        else if (!new RegExp(`^sec-websocket-accept: ${accept.replace(/[+/]/g, '\\$&')}$`, 'im').test(text)) reject(new Error('bad Sec-WebSocket-Accept'));
        else resolve(head.subarray(end + 4));
      };
      socket.on('data', onData);
      socket.once('error', reject);
    });
    const ws = new HandmadeWs(socket, `ws://${host}:${port}${path}`);
    if (rest.length > 0) {
      ws.buf = rest;
      ws.parse();
    }
    return ws;
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Parses whole frames from the buffer; a partial one waits for more bytes. */
  private parse(): void {
    for (;;) {
      if (this.buf.length < 2) return;
      const opcode = this.buf[0]! & 0x0f;
      let len = this.buf[1]! & 0x7f;
      let at = 2;
      if (len === 126) {
        if (this.buf.length < 4) return;
        len = this.buf.readUInt16BE(2);
        at = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) return;
        len = Number(this.buf.readBigUInt64BE(2));
        at = 10;
      }
      if (this.buf.length < at + len) return;
      const payload = this.buf.subarray(at, at + len);
      this.buf = this.buf.subarray(at + len);
      if (opcode === OPCODE.text) this.json.push(JSON.parse(payload.toString('utf8')) as Record<string, any>);
      this.wake();
    }
  }

  async waitJson(pred: (f: Record<string, any>) => boolean, timeoutMs = 10_000): Promise<Record<string, any>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const f = this.json.find(pred);
      if (f) return f;
      if (this.closed) throw new Error('socket closed while waiting for a frame');
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('no matching frame in time');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Answers the challenge as `device` and waits for auth_ok. */
  async authenticate(device: TestDevice, token: string): Promise<void> {
    const challenge = await this.waitJson((f) => f.type === 'challenge');
    const nonce = decodeBase64url(String(challenge.nonce));
    if (!nonce) throw new Error('challenge nonce is not base64url');
    const auth = device.authFrame(nonce, token, this.url);
    this.write(clientFrame(OPCODE.text, new TextEncoder().encode(JSON.stringify(auth))));
    const r = await this.waitJson((f) => f.type === 'auth_ok' || f.type === 'error');
    if (r.type !== 'auth_ok') throw new Error(`auth failed: ${JSON.stringify(r)}`);
  }

  /** Writes raw bytes (a frame, or part of one); resolves once handed to the kernel. */
  write(bytes: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => this.socket.write(bytes, (err) => (err ? reject(err) : resolve())));
  }

  /** Drops the connection at once (no close frame). */
  destroy(): void {
    this.socket.destroy();
  }
}
