/**
 * What we know of one sender device's sender keys in one group: up to
 * MAX_SENDER_KEY_GENERATIONS generations (the current one and the one it replaced, so
 * messages in flight across a rotation still decrypt), each a receiving chain, the
 * sender's signature key and a bounded store of skipped message keys.
 *
 * Decryption order: decode, find the generation, verify the signature (so only the
 * sender can make us do any further work), check the iteration (replay / bound), derive
 * keys on a copy, open, and only then commit.
 */
import { CryptoError } from '../errors.js';
import { MAX_SENDER_KEY_FORWARD_JUMP, MAX_SENDER_KEY_GENERATIONS, MAX_SENDER_KEY_SKIPPED_KEYS } from '../limits.js';
import type { CryptoBackend, PreparedEd25519PublicKey } from '../primitives/backend.js';
import { equalBytes } from '../primitives/bytes.js';
import { defaultBackend } from '../primitives/index.js';
import { ByteReader, ByteWriter } from '../ratchet/byte-codec.js';
import { ChainKey } from '../ratchet/chain-key.js';
import { MessageKey } from '../ratchet/message-key.js';
import { redactSecrets } from '../ratchet/redact.js';
import type { SenderKeyOptions } from './outbound-sender-key.js';
import { assertGroupId, decodeDistribution, decodeGroupMessage, signaturePrefix } from './wire.js';

export const INBOUND_SENDER_KEYS_STATE_VERSION = 1;

interface InboundGeneration {
  readonly keyId: number;
  readonly signingKey: Uint8Array;
  /** `signingKey` prepared for the backend (it verifies every message); made on first use. */
  verifier: PreparedEd25519PublicKey | undefined;
  chainKey: ChainKey;
  /** Iteration -> key, insertion order = age (FIFO eviction). */
  readonly skipped: Map<number, MessageKey>;
}

function decryptFailed(): CryptoError {
  return new CryptoError('DECRYPT_FAILED', 'decryption failed');
}

export class InboundSenderKeys {
  readonly #backend: CryptoBackend;
  readonly #groupId: Uint8Array;
  readonly #prefix: Uint8Array;
  /** Most recently installed first. */
  readonly #generations: InboundGeneration[];

  private constructor(groupId: Uint8Array, generations: InboundGeneration[], options: SenderKeyOptions) {
    this.#backend = options.backend ?? defaultBackend;
    this.#groupId = groupId;
    this.#prefix = signaturePrefix(groupId);
    this.#generations = generations;
  }

  /**
   * Starts from a distribution message. The caller must have received it over the
   * pairwise session with the sender device it files this state under.
   */
  static fromDistribution(distribution: Uint8Array, options: SenderKeyOptions = {}): InboundSenderKeys {
    const d = decodeDistribution(distribution);
    const keys = new InboundSenderKeys(d.groupId, [], options);
    keys.#install(d.keyId, d.iteration, d.chainKey, d.signingKey);
    return keys;
  }

  get groupId(): Uint8Array {
    return this.#groupId.slice();
  }

  /** Key ids held, newest first. */
  get keyIds(): number[] {
    return this.#generations.map((g) => g.keyId);
  }

  /**
   * Adds a generation from a distribution message (after a rotation). A repeat of a
   * generation we hold changes nothing, so it can never move a chain backwards and
   * re-open old iterations; the same key id with a different signing key is refused.
   */
  processDistribution(distribution: Uint8Array): void {
    const d = decodeDistribution(distribution);
    if (!equalBytes(d.groupId, this.#groupId)) {
      throw new CryptoError('INVALID_MESSAGE', 'sender key distribution is for another group');
    }
    const existing = this.#generations.find((g) => g.keyId === d.keyId);
    if (existing !== undefined) {
      if (!equalBytes(existing.signingKey, d.signingKey)) {
        throw new CryptoError('INVALID_MESSAGE', 'sender key distribution conflicts with the generation held');
      }
      return;
    }
    this.#install(d.keyId, d.iteration, d.chainKey, d.signingKey);
  }

  #install(keyId: number, iteration: number, chainKey: Uint8Array, signingKey: Uint8Array): void {
    this.#generations.unshift({
      keyId,
      signingKey,
      verifier: undefined,
      chainKey: new ChainKey(chainKey, iteration),
      skipped: new Map(),
    });
    if (this.#generations.length > MAX_SENDER_KEY_GENERATIONS) this.#generations.length = MAX_SENDER_KEY_GENERATIONS;
  }

  /**
   * Verifies and decrypts a group message. Throws DECRYPT_FAILED (bad signature or tag),
   * REPLAYED_MESSAGE, TOO_MANY_SKIPPED, INVALID_STATE (no generation with that key id:
   * never distributed to us, or rotated out), INVALID_MESSAGE / UNSUPPORTED_VERSION.
   * State is unchanged whenever it throws.
   */
  decrypt(message: Uint8Array): Uint8Array {
    const backend = this.#backend;
    const msg = decodeGroupMessage(message);
    const gen = this.#generations.find((g) => g.keyId === msg.keyId);
    if (gen === undefined) throw new CryptoError('INVALID_STATE', `no sender key with id ${msg.keyId}`);

    const prefix = this.#prefix;
    const transcript = new Uint8Array(prefix.length + msg.signed.length);
    transcript.set(prefix, 0);
    transcript.set(msg.signed, prefix.length);
    gen.verifier ??= backend.ed25519PreparePublicKey(gen.signingKey);
    if (!gen.verifier.verify(msg.signature, transcript)) throw decryptFailed();

    const ck = gen.chainKey;
    if (msg.iteration < ck.index) {
      const key = gen.skipped.get(msg.iteration);
      if (key === undefined) throw new CryptoError('REPLAYED_MESSAGE', 'group message already received');
      const plaintext = key.open(backend, msg.sealed, msg.header);
      gen.skipped.delete(msg.iteration);
      key.wipe();
      return plaintext;
    }
    if (msg.iteration - ck.index > MAX_SENDER_KEY_FORWARD_JUMP) {
      throw new CryptoError('TOO_MANY_SKIPPED', `group message is ${msg.iteration - ck.index} ahead of its chain`);
    }
    // On a copy: chain keys passed over are wiped as the next is derived (never `ck`).
    const skipped: MessageKey[] = [];
    let cursor = ck;
    const step = (): void => {
      const next = cursor.next(backend);
      if (cursor !== ck) cursor.wipe();
      cursor = next;
    };
    while (cursor.index < msg.iteration) {
      skipped.push(cursor.messageKey(backend));
      step();
    }
    const messageKey = cursor.messageKey(backend);
    let plaintext: Uint8Array;
    try {
      plaintext = messageKey.open(backend, msg.sealed, msg.header);
    } catch (err) {
      for (const key of [...skipped, messageKey]) key.wipe();
      if (cursor !== ck) cursor.wipe();
      throw err;
    }
    messageKey.wipe();
    step();
    // Commit.
    gen.chainKey = cursor;
    ck.wipe();
    for (const key of skipped) gen.skipped.set(key.index, key);
    let excess = gen.skipped.size - MAX_SENDER_KEY_SKIPPED_KEYS;
    for (const [iteration, key] of gen.skipped) {
      if (excess-- <= 0) break;
      key.wipe();
      gen.skipped.delete(iteration);
    }
    return plaintext;
  }

  /**
   * Versioned state: u8 version (1) | u8 group id length | group id | u8 generation count,
   * newest first, each: u32 key id | 32 signing key | u32 iteration | 32 chain key |
   * u16 skipped count | (u32 iteration | 32 message key) oldest first. Holds secrets.
   */
  serialize(): Uint8Array {
    const w = new ByteWriter(256);
    w.u8(INBOUND_SENDER_KEYS_STATE_VERSION).u8(this.#groupId.length).bytes(this.#groupId).u8(this.#generations.length);
    for (const g of this.#generations) {
      w.u32(g.keyId).bytes(g.signingKey).u32(g.chainKey.index).bytes(g.chainKey.exportBytes()).u16(g.skipped.size);
      for (const key of g.skipped.values()) w.u32(key.index).bytes(key.exportBytes());
    }
    return w.finish();
  }

  static deserialize(bytes: Uint8Array, options: SenderKeyOptions = {}): InboundSenderKeys {
    if (!(bytes instanceof Uint8Array) || bytes.length === 0) throw new CryptoError('INVALID_STATE', 'sender keys state: empty');
    if (bytes[0] !== INBOUND_SENDER_KEYS_STATE_VERSION) {
      throw new CryptoError('UNSUPPORTED_VERSION', `sender keys state version ${bytes[0]} is not supported`);
    }
    const r = new ByteReader(bytes, 'INVALID_STATE', 'sender keys state');
    r.u8();
    const groupId = r.bytes(r.u8());
    assertGroupId(groupId, 'INVALID_STATE');
    const count = r.u8();
    if (count === 0 || count > MAX_SENDER_KEY_GENERATIONS) throw r.fail('bad generation count');
    const generations: InboundGeneration[] = [];
    for (let i = 0; i < count; i++) {
      const keyId = r.u32();
      const signingKey = r.bytes(32);
      const iteration = r.u32();
      const chainKey = new ChainKey(r.bytes(32), iteration);
      const skippedCount = r.u16();
      if (skippedCount > MAX_SENDER_KEY_SKIPPED_KEYS) throw r.fail('too many skipped keys');
      const skipped = new Map<number, MessageKey>();
      for (let j = 0; j < skippedCount; j++) {
        const index = r.u32();
        if (index >= iteration || skipped.has(index)) throw r.fail('bad skipped key iteration');
        skipped.set(index, new MessageKey(r.bytes(32), index));
      }
      if (generations.some((g) => g.keyId === keyId)) throw r.fail('duplicate key id');
      generations.push({ keyId, signingKey, verifier: undefined, chainKey, skipped });
    }
    r.end();
    return new InboundSenderKeys(groupId, generations, options);
  }
}
redactSecrets(InboundSenderKeys, 'InboundSenderKeys');
