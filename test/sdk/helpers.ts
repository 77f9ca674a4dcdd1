/**
 * SDK test helpers: a relay process with a test token issuer, and clients of it that
 * collect what they receive.
 */
import { type ClientOptions, type Flag, type HermeticClient, type Message, MemoryStore, createClient } from '../../client-sdk/node.js';
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
