/**
 * SDK test helpers: a relay process with a test token issuer, and clients of it that
 * collect what they receive.
 */
import { WebSocket as NodeWebSocket } from 'ws';
import { BINARY_FRAME } from '../../protocol/envelopes.js';
import { type ClientOptions, type Flag, type HermeticClient, type Message, MemoryStore, SdkError, type Transport, type TransportHandlers, type WebSocketConstructor, createClient, webSocketTransport } from '../../client-sdk/node.js';
import { type TestIssuer, createTestIssuer } from '../helpers/jwt.js';
import { type RelayOptions, type RelayProcess, makeTempDir, startRelay } from '../helpers/relay.js';

export interface SdkWorld {
  readonly relay: RelayProcess;
  readonly issuer: TestIssuer;
}

export async function startWorld(opts: RelayOptions = {}): Promise<SdkWorld> {
  const issuer = await createTestIssuer(makeTempDir('hermetic-idp-'));
  const relay = await startRelay({ ...opts, env: { ...issuer.env, ...opts.env } });
  return { relay, issuer };
}

/** A client and everything it received, in order. */
export interface TestClient {
  readonly client: HermeticClient;
  readonly messages: Message[];
  readonly flags: Flag[];
  /** Resolves once `n` messages (in total) have arrived. */
  received(n: number, timeoutMs?: number): Promise<Message[]>;
  /** Resolves once a flag with this code has arrived. */
  flagged(code: string, timeoutMs?: number): Promise<Flag>;
}

export async function waitFor<T>(what: string, get: () => T | undefined, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = get();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function observe(client: HermeticClient, opts: { autoDone?: boolean } = {}): TestClient {
  const messages: Message[] = [];
  const flags: Flag[] = [];
  client.on('message', (m) => {
    messages.push(m);
    if (opts.autoDone !== false) void m.done();
  });
  client.on('flag', (f) => flags.push(f));
  return {
    client,
    messages,
    flags,
    received: (n, timeoutMs) => waitFor(`${n} messages at ${client.userId}/${client.deviceId} (have ${messages.length})`, () => (messages.length >= n ? messages : undefined), timeoutMs),
    flagged: (code, timeoutMs) => waitFor(`flag ${code} at ${client.userId}/${client.deviceId}`, () => flags.find((f) => f.code === code), timeoutMs),
  };
}

export async function newClient(world: SdkWorld, userId: string, extra: Partial<ClientOptions> = {}): Promise<HermeticClient> {
  return createClient({
    url: world.relay.baseUrl,
    userId,
    token: () => world.issuer.mint(userId),
    store: new MemoryStore(),
    ...extra,
  });
}

/**
 * A transport around the real one that records what the client sends and lets a test
 * put frames in front of the client as if the relay had sent them (a relay that lies).
 */
export interface TappedTransport {
  readonly transport: Transport;
  /** Binary frames the client sent (SENDs), in order. */
  readonly sent: Uint8Array[];
  /** Binary frames the relay sent (DELIVERs), in order, as received (before any tampering). */
  readonly received: Uint8Array[];
  /** For each frame in `sent`, the connection it went out on (1 for the first). */
  readonly sentOn: number[];
  /** Connections opened so far. */
  readonly connections: () => number;
  /** Delivers `frame` to the client on its current connection. */
  inject(frame: string | Uint8Array): void;
  /** Rewrites binary frames on their way to the client (a relay that alters envelopes). */
  tamper: ((frame: Uint8Array) => Uint8Array) | undefined;
}

export function tappedTransport(): TappedTransport {
  const inner = webSocketTransport(NodeWebSocket as unknown as WebSocketConstructor);
  const sent: Uint8Array[] = [];
  const received: Uint8Array[] = [];
  const sentOn: number[] = [];
  let opened = 0;
  let current: TransportHandlers | undefined;
  const tap: TappedTransport = {
    sent,
    received,
    sentOn,
    connections: () => opened,
    tamper: undefined,
    inject: (frame) => {
      if (!current) throw new Error('no connection to inject into');
      current.onMessage(frame);
    },
    transport: {
      open(url, handlers) {
        const wrapped: TransportHandlers = {
          ...handlers,
          onMessage: (data) => {
            if (typeof data === 'string') return handlers.onMessage(data);
            received.push(data.slice());
            // Only DELIVER frames are tampered with (a STORED_BATCH is binary too).
            handlers.onMessage(tap.tamper && data[0] === BINARY_FRAME.DELIVER ? tap.tamper(data) : data);
          },
        };
        current = wrapped;
        const connection = ++opened;
        const socket = inner.open(url, wrapped);
        return {
          send: (data) => {
            if (typeof data !== 'string') {
              sent.push(data.slice());
              sentOn.push(connection);
            }
            socket.send(data);
          },
          close: (code, reason) => socket.close(code, reason),
        };
      },
    },
  };
  return tap;
}

/** The SdkError a call rejects (or throws) with; fails if it succeeds or throws anything else. */
export async function sdkError(p: Promise<unknown> | (() => unknown)): Promise<SdkError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    if (err instanceof SdkError) return err;
    throw err;
  }
  throw new Error('expected an SdkError');
}
