/**
 * A test device: an Ed25519 identity and the keys it publishes, signed the way a real
 * client signs them, in wire (JSON, base64url) form and in store form.
 */
import { encodeBase64url } from '../../protocol/base64url.js';
import { deviceAuthTranscript, deviceRegistrationTranscript } from '../../protocol/transcripts.js';
import { type PublishedKeyKind, signPublishedKey } from '../../crypto/published-key.js';
import { type CryptoBackend, defaultBackend, systemRandom } from '../../crypto/primitives/index.js';
import type { SignedKey } from '../../server/directory/store.js';

export interface WireKey {
  keyId: number;
  publicKey: string;
  signature: string;
}

let counter = 0;

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

  /** Body of POST /v1/devices. */
  registration(): { deviceId: string; identityKey: string; signature: string } {
    const sig = this.backend.ed25519Sign(this.seed, deviceRegistrationTranscript(this.userId, this.deviceId, this.identityKey));
    return { deviceId: this.deviceId, identityKey: encodeBase64url(this.identityKey), signature: encodeBase64url(sig) };
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

  /** Signature for the WebSocket auth frame. */
  authSignature(challenge: Uint8Array, userId = this.userId, deviceId = this.deviceId): Uint8Array {
    return this.backend.ed25519Sign(this.seed, deviceAuthTranscript(challenge, userId, deviceId));
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

export function toWire(k: SignedKey): WireKey {
  return { keyId: k.keyId, publicKey: encodeBase64url(k.publicKey), signature: encodeBase64url(k.signature) };
}

export function range(first: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => first + i);
}
