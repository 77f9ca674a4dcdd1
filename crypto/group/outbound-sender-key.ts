/**
 * Our sender key for one group: the chain that encrypts everything we send to the group
 * and the Ed25519 key that signs it. Members learn it from a distribution message sent
 * over each pairwise session; rotate() starts a new generation when membership changes,
 * after which the old chain is never used again.
 */
import { CryptoError } from '../errors.js';
import type { CryptoBackend, PreparedEd25519PrivateKey } from '../primitives/backend.js';
import { assertAnyBytes, copyBytes } from '../primitives/bytes.js';
import { defaultBackend } from '../primitives/index.js';
import type { RandomSource } from '../primitives/random.js';
import { systemRandom } from '../primitives/random.js';
import { ED25519_SEED_BYTES, ED25519_SIGNATURE_BYTES } from '../primitives/sizes.js';
import { ByteReader, ByteWriter } from '../ratchet/byte-codec.js';
import { ChainKey } from '../ratchet/chain-key.js';
import { redactSecrets } from '../ratchet/redact.js';
import {
  assertGroupId,
  encodeDistribution,
  GROUP_HEADER_BYTES,
  signaturePrefix,
  writeGroupHeader,
} from './wire.js';

export const OUTBOUND_SENDER_KEY_STATE_VERSION = 1;

export interface SenderKeyOptions {
  readonly backend?: CryptoBackend;
  readonly random?: RandomSource;
}

interface Generation {
  readonly keyId: number;
  chainKey: ChainKey;
  readonly signingSeed: Uint8Array;
  readonly signingKey: Uint8Array;
  /** The signing key prepared for the backend (it signs every message); made on first use. */
  signer: PreparedEd25519PrivateKey | undefined;
}

function newGeneration(backend: CryptoBackend, random: RandomSource, keyId: number): Generation {
  const signingSeed = random(ED25519_SEED_BYTES);
  const signer = backend.ed25519PrepareKey(signingSeed);
  return {
    keyId,
    chainKey: new ChainKey(random(32), 0),
    signingSeed,
    signingKey: signer.publicKey(),
    signer,
  };
}

export class OutboundSenderKey {
  readonly #backend: CryptoBackend;
  readonly #random: RandomSource;
  readonly #groupId: Uint8Array;
  readonly #prefix: Uint8Array;
  #gen: Generation;

  private constructor(groupId: Uint8Array, gen: Generation, options: SenderKeyOptions) {
    this.#backend = options.backend ?? defaultBackend;
    this.#random = options.random ?? systemRandom;
    this.#groupId = groupId;
    this.#prefix = signaturePrefix(groupId);
    this.#gen = gen;
  }

  /** A fresh sender key for `groupId`, starting at a random key id. */
  static create(groupId: Uint8Array, options: SenderKeyOptions = {}): OutboundSenderKey {
    assertGroupId(groupId, 'INVALID_ARGUMENT');
    const backend = options.backend ?? defaultBackend;
    const random = options.random ?? systemRandom;
    const keyIdBytes = random(4);
    // Top bit clear: leaves 2^31 rotations before the id would wrap.
    const keyId = (((keyIdBytes[0] as number) & 0x7f) << 24) | ((keyIdBytes[1] as number) << 16) | ((keyIdBytes[2] as number) << 8) | (keyIdBytes[3] as number);
    return new OutboundSenderKey(copyBytes(groupId), newGeneration(backend, random, keyId), options);
  }

  get groupId(): Uint8Array {
    return this.#groupId.slice();
  }

  get keyId(): number {
    return this.#gen.keyId;
  }

  /** The iteration the next message will use. */
  get iteration(): number {
    return this.#gen.chainKey.index;
  }

  /**
   * The distribution message for the current generation, at the current iteration: a
   * member who receives it can read what we send from now on, not what came before.
   */
  distributionMessage(): Uint8Array {
    const g = this.#gen;
    return encodeDistribution({
      groupId: this.#groupId,
      keyId: g.keyId,
      iteration: g.chainKey.index,
      chainKey: g.chainKey.exportBytes(),
      signingKey: g.signingKey,
    });
  }

  /**
   * New generation (key id + 1, fresh chain and signing key), for a membership change.
   * Distribute the result to the new member list only; the old chain is dropped.
   */
  rotate(): Uint8Array {
    const keyId = this.#gen.keyId + 1;
    if (keyId > 0xffff_ffff) throw new CryptoError('INVALID_STATE', 'sender key id exhausted; create a new sender key');
    const old = this.#gen;
    this.#gen = newGeneration(this.#backend, this.#random, keyId);
    old.chainKey.wipe();
    old.signingSeed.fill(0);
    return this.distributionMessage();
  }

  /** Encrypts and signs one group message. */
  encrypt(plaintext: Uint8Array): Uint8Array {
    assertAnyBytes(plaintext, 'plaintext');
    const backend = this.#backend;
    const g = this.#gen;
    const ck = g.chainKey;
    const messageKey = ck.messageKey(backend);
    const next = ck.next(backend);
    const prefix = this.#prefix;
    const header = new Uint8Array(GROUP_HEADER_BYTES);
    writeGroupHeader(header, g.keyId, ck.index);
    const sealed = messageKey.seal(backend, plaintext, header);
    messageKey.wipe();
    const transcript = new Uint8Array(prefix.length + GROUP_HEADER_BYTES + sealed.length);
    transcript.set(prefix, 0);
    transcript.set(header, prefix.length);
    transcript.set(sealed, prefix.length + GROUP_HEADER_BYTES);
    g.signer ??= backend.ed25519PrepareKey(g.signingSeed);
    const signature = g.signer.sign(transcript);
    const out = new Uint8Array(GROUP_HEADER_BYTES + sealed.length + ED25519_SIGNATURE_BYTES);
    out.set(transcript.subarray(prefix.length), 0);
    out.set(signature, GROUP_HEADER_BYTES + sealed.length);
    g.chainKey = next;
    ck.wipe();
    return out;
  }

  /**
   * Encrypts one group message and returns it with the state after it (serialize()).
   * Persist `state` before `message` leaves the device: like a session's, each message
   * key seals one message only, which a rolled-back state would break (Session.seal).
   */
  seal(plaintext: Uint8Array): { readonly message: Uint8Array; readonly state: Uint8Array } {
    const message = this.encrypt(plaintext);
    return { message, state: this.serialize() };
  }

  /**
   * Versioned state: u8 version (1) | u8 group id length | group id | u32 key id |
   * u32 iteration | 32 chain key | 32 signing seed | 32 signing public key. Holds secrets.
   */
  serialize(): Uint8Array {
    const g = this.#gen;
    return new ByteWriter(200)
      .u8(OUTBOUND_SENDER_KEY_STATE_VERSION)
      .u8(this.#groupId.length)
      .bytes(this.#groupId)
      .u32(g.keyId)
      .u32(g.chainKey.index)
      .bytes(g.chainKey.exportBytes())
      .bytes(g.signingSeed)
      .bytes(g.signingKey)
      .finish();
  }

  static deserialize(bytes: Uint8Array, options: SenderKeyOptions = {}): OutboundSenderKey {
    if (!(bytes instanceof Uint8Array) || bytes.length === 0) throw new CryptoError('INVALID_STATE', 'sender key state: empty');
    if (bytes[0] !== OUTBOUND_SENDER_KEY_STATE_VERSION) {
      throw new CryptoError('UNSUPPORTED_VERSION', `sender key state version ${bytes[0]} is not supported`);
    }
    const r = new ByteReader(bytes, 'INVALID_STATE', 'sender key state');
    r.u8();
    const groupId = r.bytes(r.u8());
    assertGroupId(groupId, 'INVALID_STATE');
    const keyId = r.u32();
    const iteration = r.u32();
    const chainKey = new ChainKey(r.bytes(32), iteration);
    const signingSeed = r.bytes(ED25519_SEED_BYTES);
    const signingKey = r.bytes(32);
    r.end();
    return new OutboundSenderKey(groupId, { keyId, chainKey, signingSeed, signingKey, signer: undefined }, options);
  }
}
redactSecrets(OutboundSenderKey, 'OutboundSenderKey');
