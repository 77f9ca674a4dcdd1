/**
 * Topic keys: how a publisher device encrypts and signs what it publishes to a topic, so
 * that every reader device it handed the key to can read any of those messages — as often
 * as it likes (a replay from `earliest`, a consumer-group redelivery) — and nobody else
 * can read or forge them, the relay included.
 *
 * A sender key ratchets forward and deletes each message key after use: right for a chat
 * group, where each device reads a message once, wrong for a topic, which is read again.
 * A topic key is therefore a *generation*: a random 32-byte secret and an Ed25519 signing
 * key, with a random 16-byte key id. Each message takes its own key from the secret and a
 * fresh random salt; the secret never encrypts anything itself. There is no forward
 * secrecy within a generation (whoever obtains the secret reads all of that generation's
 * messages): the SDK bounds a generation by count and age, and starts a new one whenever
 * a device that held the old one is no longer a reader (client-sdk/topics.ts).
 *
 * Wire formats (all integers big-endian):
 *
 * Distribution, sent to each reader device over the pairwise sessions:
 *
 *   u8   kind: version 1 | type 5 = 0x15
 *   u8   topic length (1..MAX_TOPIC_BYTES) | topic
 *   16   key id
 *   32   secret
 *   32   signing public key (Ed25519)
 *
 * Topic message:
 *
 *   u8   kind: version 1 | type 6 = 0x16
 *   16   key id
 *   32   salt (random)
 *   n+16 ChaCha20-Poly1305 ciphertext || tag; key || nonce = HKDF-SHA256(ikm = secret,
 *        salt = salt, info = "hermetic/v1/topic/message-key" || u8 topic length || topic ||
 *        key id, 44); associated data: the 49 bytes above
 *   64   Ed25519 signature by the generation's signing key over
 *        "hermetic/v1/topic/message\0" || u8 topic length || topic || all bytes above
 *
 * The topic is bound into both the key and the signature: a message cannot be moved to
 * another topic that happens to share the generation.
 */
import { KDF_LABELS, SIGNATURE_LABELS, kdfLabelBytes, signatureLabelBytes } from '../../protocol/labels.js';
import { CryptoError } from '../errors.js';
import type { CryptoBackend } from '../primitives/backend.js';
import { equalBytes } from '../primitives/bytes.js';
import type { RandomSource } from '../primitives/random.js';
import { AEAD_TAG_BYTES, ED25519_PUBLIC_KEY_BYTES, ED25519_SIGNATURE_BYTES } from '../primitives/sizes.js';
import { ByteReader, ByteWriter } from '../ratchet/byte-codec.js';

export const TOPIC_KEY_VERSION = 1;
/** Types in the low nibble (after the pairwise session's 1, 2 and the sender keys' 3, 4). */
export const TOPIC_KEY_DISTRIBUTION_TYPE = 5;
export const TOPIC_MESSAGE_TYPE = 6;
export const TOPIC_KEY_DISTRIBUTION_KIND = (TOPIC_KEY_VERSION << 4) | TOPIC_KEY_DISTRIBUTION_TYPE;
export const TOPIC_MESSAGE_KIND = (TOPIC_KEY_VERSION << 4) | TOPIC_MESSAGE_TYPE;

export const TOPIC_KEY_ID_BYTES = 16;
export const TOPIC_SECRET_BYTES = 32;
export const TOPIC_SALT_BYTES = 32;
/** A topic name's bytes (the relay's names are at most 200 ASCII characters). */
export const MAX_TOPIC_BYTES = 255;
export const TOPIC_HEADER_BYTES = 1 + TOPIC_KEY_ID_BYTES + TOPIC_SALT_BYTES;
const MIN_TOPIC_MESSAGE_BYTES = TOPIC_HEADER_BYTES + AEAD_TAG_BYTES + ED25519_SIGNATURE_BYTES;
const KEY_AND_NONCE_BYTES = 32 + 12;

const encoder = new TextEncoder();
const MESSAGE_KEY_INFO = kdfLabelBytes(KDF_LABELS.topicMessageKey);
export const TOPIC_MESSAGE_SIGNATURE_LABEL = signatureLabelBytes(SIGNATURE_LABELS.topicMessage);

function topicBytes(topic: string, code: 'INVALID_ARGUMENT' | 'INVALID_MESSAGE'): Uint8Array {
  const b = typeof topic === 'string' ? encoder.encode(topic) : new Uint8Array(0);
  if (b.length === 0 || b.length > MAX_TOPIC_BYTES) throw new CryptoError(code, `a topic is 1..${MAX_TOPIC_BYTES} bytes`);
  return b;
}

/** `prefix || u8 topic length || topic || rest`. */
function bound(prefix: Uint8Array, topic: Uint8Array, rest: Uint8Array): Uint8Array {
  return new ByteWriter(prefix.length + 1 + topic.length + rest.length).bytes(prefix).u8(topic.length).bytes(topic).bytes(rest).finish();
}

function messageKey(backend: CryptoBackend, secret: Uint8Array, salt: Uint8Array, topic: Uint8Array, keyId: Uint8Array): { key: Uint8Array; nonce: Uint8Array } {
  const okm = backend.hkdfSha256(secret, salt, bound(MESSAGE_KEY_INFO, topic, keyId), KEY_AND_NONCE_BYTES);
  return { key: okm.subarray(0, 32), nonce: okm.subarray(32) };
}

/** What a reader device holds of one generation (all public to it; the secret is shared with the readers). */
export interface TopicKeyDistribution {
  readonly topic: string;
  readonly keyId: Uint8Array;
  readonly secret: Uint8Array;
  readonly signingKey: Uint8Array;
}

export function encodeTopicKeyDistribution(d: TopicKeyDistribution): Uint8Array {
  const t = topicBytes(d.topic, 'INVALID_ARGUMENT');
  if (d.keyId.length !== TOPIC_KEY_ID_BYTES || d.secret.length !== TOPIC_SECRET_BYTES || d.signingKey.length !== ED25519_PUBLIC_KEY_BYTES) {
    throw new CryptoError('INVALID_ARGUMENT', 'a topic key distribution has a 16-byte key id, a 32-byte secret and a 32-byte signing key');
  }
  return new ByteWriter(2 + t.length + 80).u8(TOPIC_KEY_DISTRIBUTION_KIND).u8(t.length).bytes(t).bytes(d.keyId).bytes(d.secret).bytes(d.signingKey).finish();
}

/** Throws CryptoError INVALID_MESSAGE / UNSUPPORTED_VERSION. */
export function decodeTopicKeyDistribution(bytes: Uint8Array): TopicKeyDistribution {
  checkKind(bytes, TOPIC_KEY_DISTRIBUTION_KIND, 'topic key distribution');
  const r = new ByteReader(bytes, 'INVALID_MESSAGE', 'topic key distribution');
  r.u8();
  const n = r.u8();
  if (n === 0) throw r.fail('empty topic');
  let topic: string;
  try {
    topic = new TextDecoder('utf-8', { fatal: true }).decode(r.bytes(n));
  } catch (err) {
    if (err instanceof CryptoError) throw err;
    throw r.fail('topic is not UTF-8');
  }
  const keyId = r.bytes(TOPIC_KEY_ID_BYTES).slice();
  const secret = r.bytes(TOPIC_SECRET_BYTES).slice();
  const signingKey = r.bytes(ED25519_PUBLIC_KEY_BYTES).slice();
  r.end();
  return { topic, keyId, secret, signingKey };
}

function checkKind(bytes: Uint8Array, kind: number, what: string): void {
  if (!(bytes instanceof Uint8Array) || bytes.length === 0) throw new CryptoError('INVALID_MESSAGE', `${what}: empty`);
  const first = bytes[0] as number;
  if (first >>> 4 !== TOPIC_KEY_VERSION) throw new CryptoError('UNSUPPORTED_VERSION', `${what} version ${first >>> 4} is not supported`);
  if (first !== kind) throw new CryptoError('INVALID_MESSAGE', `${what}: wrong message type`);
}

/** The key id a topic message names (a view), or throws INVALID_MESSAGE. */
export function topicMessageKeyId(message: Uint8Array): Uint8Array {
  checkKind(message, TOPIC_MESSAGE_KIND, 'topic message');
  if (message.length < MIN_TOPIC_MESSAGE_BYTES) throw new CryptoError('INVALID_MESSAGE', 'topic message too short');
  return message.subarray(1, 1 + TOPIC_KEY_ID_BYTES);
}

/**
 * One generation of a publisher device's key for one topic. The secret and signing seed
 * live in private fields: printing the object shows neither.
 */
export class OutboundTopicKey {
  readonly topic: string;
  readonly keyId: Uint8Array;
  readonly #secret: Uint8Array;
  readonly #seed: Uint8Array;
  readonly #backend: CryptoBackend;
  readonly #random: RandomSource;

  private constructor(topic: string, keyId: Uint8Array, secret: Uint8Array, seed: Uint8Array, backend: CryptoBackend, random: RandomSource) {
    topicBytes(topic, 'INVALID_ARGUMENT');
    this.topic = topic;
    this.keyId = keyId;
    this.#secret = secret;
    this.#seed = seed;
    this.#backend = backend;
    this.#random = random;
  }

  static create(topic: string, backend: CryptoBackend, random: RandomSource): OutboundTopicKey {
    return new OutboundTopicKey(topic, random(TOPIC_KEY_ID_BYTES), random(TOPIC_SECRET_BYTES), random(32), backend, random);
  }

  /** `u8 version | 16 key id | 32 secret | 32 signing seed` (the topic is kept beside it). */
  serialize(): Uint8Array {
    return new ByteWriter(1 + TOPIC_KEY_ID_BYTES + 64).u8(TOPIC_KEY_VERSION).bytes(this.keyId).bytes(this.#secret).bytes(this.#seed).finish();
  }

  static deserialize(topic: string, state: Uint8Array, backend: CryptoBackend, random: RandomSource): OutboundTopicKey {
    const r = new ByteReader(state, 'INVALID_STATE', 'topic key state');
    if (r.u8() !== TOPIC_KEY_VERSION) throw new CryptoError('INVALID_STATE', 'topic key state of another version');
    const keyId = r.bytes(TOPIC_KEY_ID_BYTES).slice();
    const secret = r.bytes(TOPIC_SECRET_BYTES).slice();
    const seed = r.bytes(32).slice();
    r.end();
    return new OutboundTopicKey(topic, keyId, secret, seed, backend, random);
  }

  /** What the readers' devices need to read this generation. */
  distribution(): Uint8Array {
    return encodeTopicKeyDistribution({ topic: this.topic, keyId: this.keyId, secret: this.#secret, signingKey: this.#backend.ed25519PublicKey(this.#seed) });
  }

  /** Encrypts and signs one (padded) plaintext. */
  seal(plaintext: Uint8Array): Uint8Array {
    const topic = topicBytes(this.topic, 'INVALID_ARGUMENT');
    const salt = this.#random(TOPIC_SALT_BYTES);
    const header = new ByteWriter(TOPIC_HEADER_BYTES).u8(TOPIC_MESSAGE_KIND).bytes(this.keyId).bytes(salt).finish();
    const { key, nonce } = messageKey(this.#backend, this.#secret, salt, topic, this.keyId);
    const sealed = this.#backend.aeadSeal(key, nonce, plaintext, header);
    key.fill(0);
    const body = new ByteWriter(header.length + sealed.length).bytes(header).bytes(sealed).finish();
    const signature = this.#backend.ed25519Sign(this.#seed, bound(TOPIC_MESSAGE_SIGNATURE_LABEL, topic, body));
    return new ByteWriter(body.length + ED25519_SIGNATURE_BYTES).bytes(body).bytes(signature).finish();
  }

  toString(): string {
    return `OutboundTopicKey(${this.topic})`;
  }

  toJSON(): { topic: string } {
    return { topic: this.topic };
  }
}

/**
 * Opens a topic message with a generation a reader holds: the signature first (a message
 * that does not verify is never decrypted), then the AEAD on a copy of the ciphertext.
 * Throws CryptoError INVALID_MESSAGE (malformed, or another generation or topic),
 * INVALID_SIGNATURE, DECRYPT_FAILED.
 */
export function openTopicMessage(backend: CryptoBackend, key: TopicKeyDistribution, topic: string, message: Uint8Array): Uint8Array {
  const keyId = topicMessageKeyId(message);
  if (!equalBytes(keyId, key.keyId)) throw new CryptoError('INVALID_MESSAGE', 'the topic message names another generation');
  const t = topicBytes(topic, 'INVALID_MESSAGE');
  if (key.topic !== topic) throw new CryptoError('INVALID_MESSAGE', 'the generation belongs to another topic');
  const end = message.length - ED25519_SIGNATURE_BYTES;
  const body = message.subarray(0, end);
  if (!backend.ed25519Verify(message.subarray(end), bound(TOPIC_MESSAGE_SIGNATURE_LABEL, t, body), key.signingKey)) {
    throw new CryptoError('INVALID_SIGNATURE', 'the topic message is not signed by its generation');
  }
  const header = message.slice(0, TOPIC_HEADER_BYTES);
  const salt = header.subarray(1 + TOPIC_KEY_ID_BYTES);
  const { key: k, nonce } = messageKey(backend, key.secret, salt, t, key.keyId);
  try {
    return backend.aeadOpen(k, nonce, message.slice(TOPIC_HEADER_BYTES, end), header);
  } finally {
    k.fill(0);
  }
}
