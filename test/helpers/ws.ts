/**
 * A WebSocket test client on the runtime's WHATWG WebSocket: frames arrive in a queue
 * that tests read in order, and the close code and reason are kept.
 */
import { decodeBase64url } from '../../protocol/base64url.js';

export interface CloseInfo {
  readonly code: number;
  readonly reason: string;
}

export type Frame = Record<string, any> & { type: string };

/** Frames the relay sends in answer to something the client did. Everything else
 * (mailbox deliveries, backlog markers) it may push unsolicited once a device is bound;
 * `reply()` skips those so that tests about requests are not coupled to delivery. */
const REPLY_TYPES = new Set(['challenge', 'auth_ok', 'token_ok', 'pong', 'error', 'stored']);

export class WsClient {
  private readonly queue: Frame[] = [];
  private waiters: Array<() => void> = [];
  readonly closed: Promise<CloseInfo>;
  private closeInfo: CloseInfo | undefined;

  private constructor(readonly socket: WebSocket) {
    socket.binaryType = 'arraybuffer';
    socket.addEventListener('message', (ev) => {
      if (typeof ev.data === 'string') this.queue.push(JSON.parse(ev.data) as Frame);
      else this.queue.push({ type: '(binary)', data: new Uint8Array(ev.data as ArrayBuffer) });
      this.wake();
    });
    this.closed = new Promise((resolve) => {
      socket.addEventListener('close', (ev) => {
        this.closeInfo = { code: ev.code, reason: ev.reason };
        resolve(this.closeInfo);
        this.wake();
      });
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  static connect(url: string, timeoutMs = 10_000): Promise<WsClient> {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(url);
      const client = new WsClient(socket);
      const timer = setTimeout(() => {
        socket.close();
        reject(new Error(`WebSocket ${url} did not open within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.addEventListener('open', () => {
        clearTimeout(timer);
        resolve(client);
      });
      socket.addEventListener('error', () => {
        clearTimeout(timer);
        reject(new Error(`WebSocket ${url} failed to open`));
      });
    });
  }

  /** Connects and reads the relay's challenge nonce. */
  static async connectWithChallenge(url: string): Promise<{ ws: WsClient; challenge: Uint8Array }> {
    const ws = await WsClient.connect(url);
    const f = await ws.next();
    if (f.type !== 'challenge') throw new Error(`expected a challenge, got ${JSON.stringify(f)}`);
    const challenge = decodeBase64url(String(f.nonce));
    if (!challenge) throw new Error('challenge nonce is not base64url');
    return { ws, challenge };
  }

  send(frame: unknown): void {
    this.socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** The next frame; rejects if the socket closes first or nothing comes in time. */
  async next(timeoutMs = 10_000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const f = this.queue.shift();
      if (f) return f;
      if (this.closeInfo) throw new Error(`socket closed (${this.closeInfo.code} ${this.closeInfo.reason}) while waiting for a frame`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no frame within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** The next reply frame (see REPLY_TYPES), skipping unsolicited pushes. */
  async reply(timeoutMs = 10_000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const f = await this.next(Math.max(1, deadline - Date.now()));
      if (REPLY_TYPES.has(f.type)) return f;
    }
  }

  /** Waits for the close, with a hang guard. */
  async waitClosed(timeoutMs = 15_000): Promise<CloseInfo> {
    let timer: NodeJS.Timeout | undefined;
    const guard = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`socket not closed within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      return await Promise.race([this.closed, guard]);
    } finally {
      clearTimeout(timer);
    }
  }

  get isOpen(): boolean {
    return this.socket.readyState === WebSocket.OPEN;
  }

  close(): void {
    if (this.socket.readyState === WebSocket.OPEN || this.socket.readyState === WebSocket.CONNECTING) this.socket.close();
  }
}
