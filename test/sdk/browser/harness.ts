/**
 * What the browser test's page runs: hermetic/client's browser entry, bundled with esbuild
 * (examples/bundle.ts), and a small driver the test calls through `page.evaluate`. Tokens
 * come from the test process (`mintToken`, exposed with page.exposeFunction).
 */
import { type Flag, type HermeticClient, IndexedDbStore, createClient } from '../../../client-sdk/index.js';
import { type BackendDescription, cryptoReady, defaultBackend, nativeBackend } from '../../../crypto/primitives/index.js';

export interface Received {
  readonly from: string;
  readonly deviceId: string;
  readonly kind: string;
  readonly body: unknown;
  readonly flags: readonly string[];
}

export interface Harness {
  /** The crypto backend the client uses by default here, and whether a native one loaded. */
  readonly backend: { readonly name: string; readonly native: boolean };
  /** Waits for libsodium to load (or fail) and says which implementation serves each primitive. */
  crypto(): Promise<BackendDescription>;
  readonly IndexedDbStore: typeof IndexedDbStore;
  client: HermeticClient | undefined;
  readonly received: Received[];
  readonly flags: Flag[];
  /** Opens (or restores) the device of `userId` kept in the IndexedDB store `storeName`. */
  start(url: string, userId: string, storeName: string): Promise<{ deviceId: string; state: string }>;
}

type PageGlobals = { harness: Harness; mintToken(userId: string): Promise<string> };
const page = globalThis as unknown as PageGlobals;

const harness: Harness = {
  backend: { name: defaultBackend.name, native: nativeBackend !== undefined },
  crypto: () => cryptoReady(),
  IndexedDbStore,
  client: undefined,
  received: [],
  flags: [],
  async start(url, userId, storeName) {
    const store = await IndexedDbStore.open(storeName);
    const client = await createClient({ url, userId, token: () => page.mintToken(userId), store });
    client.on('message', (m) => {
      harness.received.push({ from: m.from.userId, deviceId: m.from.deviceId, kind: m.kind, body: m.body, flags: m.flags });
      void m.done();
    });
    client.on('flag', (f) => harness.flags.push(f));
    harness.client = client;
    return { deviceId: client.deviceId, state: client.state.state };
  },
};
page.harness = harness;
