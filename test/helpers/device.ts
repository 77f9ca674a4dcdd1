/**
 * A test device: an Ed25519 identity and the keys it publishes, signed the way a real
 * client signs them, in wire (JSON, base64url) form and in store form.
 */
import { encodeBase64url } from '../../protocol/base64url.js';
import { relayOrigin } from '../../protocol/origin.js';
import { deviceAuthTranscript } from '../../protocol/transcripts.js';
import { DeviceChain } from '../../crypto/devices/chain.js';
import { createLinkRequest, linkEntry, revokeEntry, rootEntry } from '../../crypto/devices/link.js';
import { IdentityKeyPair } from '../../crypto/identity/identity-key.js';
import { type PublishedKeyKind, signPublishedKey } from '../../crypto/published-key.js';
import { type CryptoBackend, defaultBackend, systemRandom } from '../../crypto/primitives/index.js';
import type { SignedKey } from '../../server/directory/store.js';

export interface WireKey {
  keyId: number;
  publicKey: string;
  signature: string;
}

let counter = 0;

/** The devices each test user has enrolled in this process, oldest first: a later device
 * of the same user is linked by one of them, as a real client's would be. */
const enrolled = new Map<string, TestDevice[]>();

/** Verifies a user's list as served, throwing on any refusal (tests expect valid lists). */
export function verifiedChain(userId: string, entries: readonly Uint8Array[]): DeviceChain {
  const r = DeviceChain.verify(userId, entries);
  if (!r.ok) throw new Error(`device list of ${userId} does not verify at entry ${r.index}: ${r.reason}: ${r.message}`);
  return r.chain;
}

/** A device id unique within this process, readable in failures. */
export function uniqueDeviceId(prefix = 'dev'): string {
  counter++;
  return `${prefix}-${process.pid}-${counter}-${encodeBase64url(systemRandom(3))}`;
}

export class TestDevice {
  readonly seed: Uint8Array;
  readonly identityKey: Uint8Array;

  constructor(
    readonly userId: string,
    readonly deviceId: string = uniqueDeviceId(),
    readonly backend: CryptoBackend = defaultBackend,
  ) {
    this.seed = systemRandom(32);
    this.identityKey = backend.ed25519PublicKey(this.seed);
  }

  /** The identity key pair (for signing device-list entries). */
  get identity(): IdentityKeyPair {
    return IdentityKeyPair.fromSeed(this.seed, this.backend);
  }

  /**
   * The entry that enrols this device into `chain` (the user's list as it is now): the
   * root when the list is empty, else an add signed by `linker` (by default the first
   * device this process enrolled for the user that is still active).
   */
  enrolEntry(chain: DeviceChain, linker?: TestDevice): Uint8Array {
    if (chain.length === 0) return rootEntry(this.identity, this.userId, this.deviceId);
    const active = (d: TestDevice): boolean => {
      const listed = chain.device(d.deviceId)?.identityKey;
      return listed !== undefined && Buffer.compare(listed, d.identityKey) === 0;
    };
    const by = linker ?? (enrolled.get(this.userId) ?? []).find(active);
    if (!by) throw new Error(`no enrolled device of ${this.userId} in this process can link ${this.deviceId}`);
    return linkEntry(chain, by.deviceId, by.identity, createLinkRequest(this.identity, this.userId, this.deviceId));
  }

  /** The entry revoking `deviceId` from `chain`, signed by this device. */
  revokeEntry(chain: DeviceChain, deviceId: string): Uint8Array {
    return revokeEntry(chain, this.deviceId, this.identity, deviceId);
  }

  /** Remembers that the relay accepted this device into its user's list. */
  markEnrolled(): void {
    const list = enrolled.get(this.userId) ?? [];
    if (!list.includes(this)) list.push(this);
    enrolled.set(this.userId, list);
  }

  /** Body of POST /v1/devices enrolling this device into `chain`. */
  enrolBody(chain: DeviceChain, linker?: TestDevice): { entry: string } {
    return { entry: encodeBase64url(this.enrolEntry(chain, linker)) };
  }

  /** A key of `kind` with a fresh public key, signed by this device (store form). */
  key(kind: PublishedKeyKind, keyId: number, publicKey: Uint8Array = this.freshPublicKey(kind)): SignedKey {
    return { keyId, publicKey, signature: signPublishedKey(this.backend, this.seed, kind, keyId, publicKey) };
  }

  wireKey(kind: PublishedKeyKind, keyId: number, publicKey?: Uint8Array): WireKey {
    return toWire(this.key(kind, keyId, publicKey));
  }

  freshPublicKey(kind: PublishedKeyKind): Uint8Array {
    if (kind === 'signed-prekey' || kind === 'one-time-prekey') return this.backend.x25519PublicKey(systemRandom(32));
    return this.backend.mlkemKeygen().publicKey;
  }

  /** Signature for the WebSocket auth frame, naming the relay `origin` (originOf(wsUrl)). */
  authSignature(challenge: Uint8Array, origin: string, userId = this.userId, deviceId = this.deviceId): Uint8Array {
    return this.backend.ed25519Sign(this.seed, deviceAuthTranscript(challenge, userId, deviceId, origin));
  }

  /** A complete auth frame for a relay at `wsUrl`. */
  authFrame(challenge: Uint8Array, token: string, wsUrl: string): { type: 'auth'; token: string; deviceId: string; origin: string; signature: string } {
    const origin = originOf(wsUrl);
    return { type: 'auth', token, deviceId: this.deviceId, origin, signature: encodeBase64url(this.authSignature(challenge, origin)) };
  }

  /** A complete first upload: signed prekey, last-resort KEM key, and one-time keys. */
  fullUpload(opts: { oneTime: number; oneTimeKem: number; firstId?: number }): {
    signedPrekey: WireKey;
    lastResortKemPrekey: WireKey;
    oneTimePrekeys: WireKey[];
    oneTimeKemPrekeys: WireKey[];
  } {
    const first = opts.firstId ?? 1;
    return {
      signedPrekey: this.wireKey('signed-prekey', first),
      lastResortKemPrekey: this.wireKey('last-resort-kem-prekey', first),
      oneTimePrekeys: range(first, opts.oneTime).map((id) => this.wireKey('one-time-prekey', id)),
      oneTimeKemPrekeys: range(first, opts.oneTimeKem).map((id) => this.wireKey('one-time-kem-prekey', id)),
    };
  }
}

/** The relay origin a device signs for a relay at `wsUrl`. */
export function originOf(wsUrl: string): string {
  const o = relayOrigin(wsUrl);
  if (o === undefined) throw new Error(`not a relay URL: ${wsUrl}`);
  return o;
}

export function toWire(k: SignedKey): WireKey {
  return { keyId: k.keyId, publicKey: encodeBase64url(k.publicKey), signature: encodeBase64url(k.signature) };
}

export function range(first: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => first + i);
}
