/**
 * The default backend: each primitive from the fastest implementation this platform has,
 * chosen per primitive rather than per backend, visible and overridable.
 *
 *   primitive  Node (node:crypto present)   browsers and other runtimes
 *   sha2       native                        sodium, else noble
 *   hmac       sodium, else native           sodium, else noble
 *   hkdf       sodium, else native           sodium, else noble
 *   x25519     native                        sodium, else noble
 *   ed25519    native                        sodium, else noble
 *   aead       sodium, else native           sodium, else noble
 *   mlkem      sodium, else noble            sodium, else noble
 *
 * In Node, libsodium's HMAC, HKDF and ChaCha20-Poly1305 beat node:crypto's per-call cost
 * (1.3-2x for the small inputs a ratchet step uses), while OpenSSL is faster for SHA-2,
 * X25519 and Ed25519 signing, measured in alternating slices in one process (see
 * docs/PERFORMANCE.md). Every implementation gives the same bytes and verdicts, so the
 * choice changes speed only, and it may change while the process runs.
 *
 * libsodium's WebAssembly instantiates asynchronously, while the backend interface is
 * synchronous. The first call of a primitive that prefers libsodium starts loading it
 * (so a process that never needs it, like the relay, never loads it); until it is ready
 * that primitive is served by the next implementation in its list, and afterwards by
 * libsodium. `cryptoReady()` starts the load and resolves when it has succeeded or
 * failed (it never rejects); the SDK's createClient awaits it. A failed load is logged
 * once with its reason, shown by `describeBackend()`, and leaves the fallbacks in place.
 */
import { CryptoError } from '../errors.js';
import type { BackendName, CryptoBackend } from './backend.js';
import { nativeBackend } from './native.js';
import { nobleBackend } from './noble.js';
import { loadSodiumBackend } from './sodium.js';

/** The primitive families the default backend chooses an implementation for. */
export type Primitive = 'sha2' | 'hmac' | 'hkdf' | 'x25519' | 'ed25519' | 'aead' | 'mlkem';
export type Implementation = 'native' | 'noble' | 'sodium';

export const PRIMITIVES: readonly Primitive[] = ['sha2', 'hmac', 'hkdf', 'x25519', 'ed25519', 'aead', 'mlkem'];
const IMPLEMENTATIONS: readonly Implementation[] = ['native', 'noble', 'sodium'];

/** Which methods of CryptoBackend belong to each primitive. */
const METHODS = {
  sha2: ['sha256', 'sha512'],
  hmac: ['hmacSha256'],
  hkdf: ['hkdfSha256'],
  x25519: ['x25519PublicKey', 'x25519', 'x25519PrepareKey', 'x25519PreparePublicKey'],
  ed25519: ['ed25519PublicKey', 'ed25519Sign', 'ed25519Verify', 'ed25519PrepareKey', 'ed25519PreparePublicKey'],
  aead: ['aeadSeal', 'aeadOpen'],
  mlkem: ['mlkemKeygen', 'mlkemEncapsulate', 'mlkemDecapsulate'],
} as const satisfies Record<Primitive, readonly (keyof CryptoBackend)[]>;

type Preferences = Record<Primitive, readonly Implementation[]>;

/** Where node:crypto is present, the primitives it serves fastest. */
const NATIVE_FIRST: ReadonlySet<Primitive> = new Set(['sha2', 'x25519', 'ed25519']);

/** The platform's default order of preference per primitive (see the table above). */
function platformPreferences(): Preferences {
  const prefs = {} as Record<Primitive, readonly Implementation[]>;
  for (const p of PRIMITIVES) {
    if (nativeBackend === undefined || p === 'mlkem') prefs[p] = ['sodium', 'noble'];
    else prefs[p] = NATIVE_FIRST.has(p) ? ['native'] : ['sodium', 'native'];
  }
  return prefs;
}

/** State of the libsodium backend. */
export type SodiumState = 'not loaded' | 'loading' | 'ready' | 'failed';

export interface BackendDescription {
  /** The implementation serving each primitive now. */
  readonly primitives: Readonly<Record<Primitive, Implementation>>;
  /** The implementations wanted per primitive, best first (the defaults or an override). */
  readonly preferences: Readonly<Record<Primitive, readonly Implementation[]>>;
  readonly sodium: SodiumState;
  /** Why libsodium is unavailable, when it failed to load. */
  readonly sodiumError?: string;
}

let sodium: CryptoBackend | undefined;
let sodiumState: SodiumState = 'not loaded';
let sodiumError: string | undefined;
let loading: Promise<void> | undefined;
let preferences: Preferences = platformPreferences();
/** The backend serving each primitive, recomputed when libsodium arrives or preferences change. */
const current = {} as Record<Primitive, CryptoBackend>;

function implementation(name: Implementation): CryptoBackend | undefined {
  return name === 'native' ? nativeBackend : name === 'noble' ? nobleBackend : sodium;
}

function choose(): void {
  for (const p of PRIMITIVES) {
    const found = preferences[p].map(implementation).find((b) => b !== undefined);
    current[p] = found ?? nobleBackend;
  }
}
choose();

/** Whether any primitive would use libsodium once loaded (then its first call starts the load). */
function wantsSodium(p: Primitive): boolean {
  return sodiumState === 'not loaded' && preferences[p].includes('sodium');
}

/** Tells whoever is watching that libsodium is unavailable, once, with the reason. */
let reportFailure: (reason: string) => void = (reason) => {
  console.warn(`hermetic: libsodium unavailable, using the fallback implementations (${reason})`);
};

/**
 * Starts loading libsodium (once) and resolves when it is ready or has failed; never
 * rejects. Primitives preferring it switch to it as soon as it is ready.
 */
export function cryptoReady(): Promise<BackendDescription> {
  loading ??= (async () => {
    sodiumState = 'loading';
    try {
      sodium = await loadSodiumBackend();
      sodiumState = 'ready';
      choose();
    } catch (e) {
      sodiumState = 'failed';
      sodiumError = e instanceof Error ? e.message : String(e);
      reportFailure(sodiumError);
    }
  })();
  return loading.then(describeBackend);
}

/** The implementation of each primitive in use now, and libsodium's state. */
export function describeBackend(): BackendDescription {
  const primitives = {} as Record<Primitive, Implementation>;
  for (const p of PRIMITIVES) primitives[p] = current[p].name as Implementation;
  return {
    primitives,
    preferences: { ...preferences },
    sodium: sodiumState,
    ...(sodiumError === undefined ? {} : { sodiumError }),
  };
}

/**
 * Overrides the implementation of some primitives (the others keep the platform
 * default); `selectImplementations()` with no argument restores every default. A choice
 * of libsodium before it is ready starts loading it and uses the platform default
 * meanwhile. Throws CryptoError('INVALID_ARGUMENT') for an unknown primitive or
 * implementation, or one this runtime cannot have (native outside Node).
 */
export function selectImplementations(choice: Partial<Record<Primitive, Implementation>> = {}): BackendDescription {
  const next = platformPreferences();
  for (const [p, impl] of Object.entries(choice)) {
    if (!(PRIMITIVES as readonly string[]).includes(p)) {
      throw new CryptoError('INVALID_ARGUMENT', `unknown primitive "${p}" (expected one of ${PRIMITIVES.join(', ')})`);
    }
    if (impl === undefined) continue;
    if (!IMPLEMENTATIONS.includes(impl)) {
      throw new CryptoError('INVALID_ARGUMENT', `unknown implementation "${String(impl)}" (expected native, noble or sodium)`);
    }
    if (impl === 'native' && nativeBackend === undefined) {
      throw new CryptoError('INVALID_ARGUMENT', 'native crypto backend is not available in this runtime');
    }
    const primitive = p as Primitive;
    next[primitive] = impl === 'sodium' ? ['sodium', ...next[primitive].filter((i) => i !== 'sodium')] : [impl];
  }
  preferences = next;
  choose();
  if (PRIMITIVES.some(wantsSodium)) void cryptoReady();
  return describeBackend();
}

/** libsodium's backend once loaded (`cryptoReady()`), else undefined. */
export function loadedSodiumBackend(): CryptoBackend | undefined {
  return sodium;
}

/** Where a failed libsodium load is reported (console.warn by default). */
export function onSodiumUnavailable(report: (reason: string) => void): void {
  reportFailure = report;
}

type Method = (typeof METHODS)[Primitive][number];

/** One method of the default backend: the current implementation's, looked up per call. */
function dispatch<M extends Method>(p: Primitive, method: M): CryptoBackend[M] {
  const call = (...args: unknown[]): unknown => {
    if (wantsSodium(p)) void cryptoReady();
    const target = current[p];
    return (target[method] as (...a: unknown[]) => unknown).apply(target, args);
  };
  return call as CryptoBackend[M];
}

function buildDefault(): CryptoBackend {
  const backend: Record<string, unknown> = { name: 'default' satisfies BackendName };
  for (const p of PRIMITIVES) for (const m of METHODS[p]) backend[m] = dispatch(p, m);
  return backend as unknown as CryptoBackend;
}

/** The default backend: every primitive from the implementation chosen for it now. */
export const selectedBackend: CryptoBackend = buildDefault();
