/**
 * The SDK's connection against a scripted relay, on a manual clock (nothing sleeps): it
 * signs the challenge with the relay origin, pings a quiet line and gives up on a silent
 * one, reconnects with jittered exponential backoff, renews its token before it expires,
 * and stays away when replaced or revoked.
 */
import { describe, expect, it } from 'vitest';
import { ManualClock, limits } from '../../client-sdk/node.js';
import { Connection, type ConnectionState, type OfflineReason } from '../../client-sdk/connection.js';
import type { Transport, TransportHandlers } from '../../client-sdk/transport/transport.js';
import { IdentityKeyPair } from '../../crypto/identity/identity-key.js';
import { encodeBase64url } from '../../protocol/base64url.js';
import { CLOSE_CODES } from '../../protocol/errors.js';
import { decodeClientFrame } from '../../protocol/frames.js';
import { deviceAuthTranscript } from '../../protocol/transcripts.js';
import { seededRandom } from '../crypto/session-fixtures.js';

/** A relay the test scripts: every socket the connection opens, and what went through it. */
class ScriptedRelay {
  readonly sockets: Array<{ handlers: TransportHandlers; sent: string[]; closed: { code?: number } | undefined; url: string }> = [];

  readonly transport: Transport = {
    open: (url, handlers) => {
      const s = { handlers, sent: [] as string[], closed: undefined as { code?: number } | undefined, url };
      this.sockets.push(s);
      return {
        send: (data) => {
          if (typeof data === 'string') s.sent.push(data);
        },
        close: (code) => {
          s.closed = { code };
          handlers.onClose(code ?? 1000, '');
        },
      };
    },
  };

  get last() {
    return this.sockets[this.sockets.length - 1]!;
  }

  /** Opens the last socket and sends a challenge. */
  challenge(nonce = new Uint8Array(32).fill(4)): void {
    this.last.handlers.onOpen();
    this.last.handlers.onMessage(JSON.stringify({ type: 'challenge', nonce: encodeBase64url(nonce) }));
  }

  authOk(expiresAt: number): void {
    this.last.handlers.onMessage(JSON.stringify({ type: 'auth_ok', userId: 'alice', deviceId: 'phone', expiresAt }));
  }

  /** The client frames of the last socket, decoded. */
  frames() {
    return this.last.sent.map((f) => decodeClientFrame(f));
  }
}

const tick = () => new Promise((r) => setTimeout(r, 0));

function setup(token: (fresh: boolean) => Promise<string> = async () => 'tok') {
  const relay = new ScriptedRelay();
  const clock = new ManualClock(1_800_000_000_000);
  const identity = IdentityKeyPair.generate();
  const states: Array<[ConnectionState, OfflineReason | undefined]> = [];
  const conn = new Connection(
    { wsUrl: 'wss://relay.example/v1/ws', origin: 'wss://relay.example', userId: 'alice', deviceId: 'phone', identity, token, transport: relay.transport, clock, random: seededRandom('connection') },
    {
      onState: (s, r) => states.push([s, r]),
      onOnline: () => undefined,
      onDeliver: () => undefined,
      onTopicFrame: () => undefined,
      onTopicError: () => false,
      onMalformedDeliver: () => undefined,
      onQueueEmpty: () => undefined,
      onExpired: () => undefined,
      onStored: () => undefined,
      onSendError: () => undefined,
      onProblem: () => undefined,
    },
  );
  return { relay, clock, identity, states, conn };
}

describe('SDK connection', () => {
  it('answers the challenge with a signature over the relay origin, then is online', async () => {
    const { relay, identity, conn, clock } = setup();
    conn.start();
    const nonce = new Uint8Array(32).fill(9);
    relay.challenge(nonce);
    await tick();
    const [auth] = relay.frames();
    expect(auth).toMatchObject({ type: 'auth', token: 'tok', deviceId: 'phone', origin: 'wss://relay.example' });
    if (auth?.type !== 'auth') throw new Error('no auth frame');
    expect(identity.publicKey.verify(deviceAuthTranscript(nonce, 'alice', 'phone', 'wss://relay.example'), auth.signature)).toBe(true);
    relay.authOk(clock.now() + 3_600_000);
    expect(conn.state).toBe('online');
    conn.stop();
  });

  it('pings a quiet line, and reconnects when the relay stays silent', async () => {
    const { relay, clock, conn, states } = setup();
    conn.start();
    relay.challenge();
    await tick();
    relay.authOk(clock.now() + 3_600_000);
    clock.advance(limits.HEARTBEAT_INTERVAL_MS);
    expect(relay.frames().some((f) => f.type === 'ping')).toBe(true);
    // Nothing comes back at all: the socket is given up, and a new one opened.
    const dead = relay.last;
    clock.advance(limits.HEARTBEAT_TIMEOUT_MS);
    clock.advance(limits.RECONNECT_MAX_MS);
    expect(states).toContainEqual(['offline', 'heartbeat-timeout']);
    expect(dead.closed).toBeDefined();
    expect(relay.sockets.length).toBe(2);
    conn.stop();
  });

  it('backs off exponentially with jitter, capped, and resets after a successful auth', async () => {
    const { relay, clock, conn } = setup();
    conn.start();
    const delays: number[] = [];
    for (let i = 0; i < 10; i++) {
      const opened = relay.sockets.length;
      relay.last.handlers.onClose(1006, 'network');
      let waited = 0;
      while (relay.sockets.length === opened) {
        clock.advance(50);
        waited += 50;
        if (waited > limits.RECONNECT_MAX_MS + 100) throw new Error('no reconnect');
      }
      delays.push(waited);
    }
    for (const [i, d] of delays.entries()) {
      expect(d).toBeLessThanOrEqual(Math.min(limits.RECONNECT_MAX_MS, limits.RECONNECT_BASE_MS * 2 ** i) + 50);
    }
    // Later attempts wait longer on the whole (a random draw below a growing cap).
    expect(delays.slice(5).reduce((a, b) => a + b)).toBeGreaterThan(delays.slice(0, 5).reduce((a, b) => a + b));
    relay.challenge();
    await tick();
    relay.authOk(clock.now() + 3_600_000);
    relay.last.handlers.onClose(1006, 'network');
    let waited = 0;
    const opened = relay.sockets.length;
    while (relay.sockets.length === opened) {
      clock.advance(50);
      waited += 50;
    }
    expect(waited).toBeLessThanOrEqual(limits.RECONNECT_BASE_MS + 50);
    conn.stop();
  });

  it('renews its token before it expires, asking for a fresh one', async () => {
    const asked: boolean[] = [];
    const { relay, clock, conn } = setup(async (fresh) => {
      asked.push(fresh);
      return fresh ? 'fresh-token' : 'tok';
    });
    conn.start();
    relay.challenge();
    await tick();
    relay.authOk(clock.now() + 10 * 60_000);
    // Nine minutes of a live line (the relay answers the pings).
    for (let t = 0; t < 10 * 60_000 - limits.TOKEN_RENEW_MARGIN_MS; t += 10_000) {
      clock.advance(10_000);
      relay.last.handlers.onMessage(JSON.stringify({ type: 'pong' }));
    }
    await tick();
    expect(asked).toEqual([false, true]);
    expect(relay.frames().at(-1)).toEqual({ type: 'token', token: 'fresh-token' });
    conn.stop();
  });

  it('stays away when replaced (4002) or revoked (4003), comes back after 1001', async () => {
    for (const [code, reason, again] of [
      [CLOSE_CODES.REPLACED, 'replaced', false],
      [CLOSE_CODES.DEVICE_REVOKED, 'revoked', false],
      [CLOSE_CODES.GOING_AWAY, 'relay-shutting-down', true],
    ] as const) {
      const { relay, clock, conn, states } = setup();
      conn.start();
      relay.challenge();
      await tick();
      relay.authOk(clock.now() + 3_600_000);
      relay.last.handlers.onClose(code, '');
      expect(states.at(-1)).toEqual(['offline', reason]);
      clock.advance(limits.RECONNECT_MAX_MS * 2);
      expect(relay.sockets.length, String(code)).toBe(again ? 2 : 1);
      conn.stop();
    }
  });

  it('asks for a fresh token after a token refusal, not after an outage', async () => {
    const asked: boolean[] = [];
    const { relay, clock, conn } = setup(async (fresh) => {
      asked.push(fresh);
      return 'tok';
    });
    conn.start();
    relay.challenge();
    await tick();
    relay.last.handlers.onMessage(JSON.stringify({ type: 'error', code: 'UNAVAILABLE', message: 'db down' }));
    relay.last.handlers.onClose(1013, '');
    clock.advance(limits.RECONNECT_MAX_MS);
    relay.challenge();
    await tick();
    relay.last.handlers.onMessage(JSON.stringify({ type: 'error', code: 'TOKEN_EXPIRED', message: 'old' }));
    relay.last.handlers.onClose(CLOSE_CODES.AUTH_FAILED, '');
    clock.advance(limits.RECONNECT_MAX_MS);
    relay.challenge();
    await tick();
    expect(asked).toEqual([false, false, true]);
    conn.stop();
  });
});
