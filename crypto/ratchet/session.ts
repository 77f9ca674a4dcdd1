/**
 * A Double Ratchet session between two devices (Signal's Double Ratchet, with the
 * receiving-chain bookkeeping of Olm/vodozemac).
 *
 * State: a root key; a sending side that is either active (our ratchet key pair and its
 * chain) or inactive (we received the peer's new ratchet key and will start a new
 * sending chain, with a fresh key pair, on our next encrypt); up to MAX_RECEIVER_CHAINS
 * receiving chains, newest first; and the skipped-key store.
 *
 * Decryption works on a copy and commits only on success: every candidate key is
 * derived into local variables, the AEAD check runs, and only then are the chains, the
 * root key and the skipped-key store updated. A forged, tampered or replayed message
 * leaves the session byte-for-byte unchanged.
 *
 * Per message on an existing chain the cost is two HMAC calls and one AEAD call on each
 * side; a DH ratchet step adds one key generation and one X25519 + HKDF for the sender
 * and one X25519 + HKDF for the receiver.
 */
import { CryptoError } from '../errors.js';
import { decodeInitialMessage, INITIAL_HANDSHAKE_BYTES } from '../handshake/initial-message.js';
import { MAX_RECEIVER_CHAINS, MAX_SKIPPED_KEYS_PER_MESSAGE } from '../limits.js';
import type { CryptoBackend } from '../primitives/backend.js';
import { assertAnyBytes, copyBytes, equalBytes } from '../primitives/bytes.js';
import { defaultBackend } from '../primitives/index.js';
import type { RandomSource } from '../primitives/random.js';
import { systemRandom } from '../primitives/random.js';
import { ChainKey } from './chain-key.js';
import { INITIAL_KDF_INFO } from './labels.js';
import {
  decodeRatchetMessage,
  RATCHET_HEADER_BYTES,
  type RatchetMessage,
  sessionMessageType,
  writeRatchetHeader,
} from './message.js';
import type { MessageKey } from './message-key.js';
import { RatchetKeyPair, RemoteRatchetKey } from './ratchet-key.js';
import { advanceChain, type ChainAdvance, discardAdvance, ReceiverChain } from './receiver-chain.js';
import { redactSecrets } from './redact.js';
import { RootKey } from './root-key.js';
import { SenderChain } from './sender-chain.js';
import { decodeSessionState, encodeSessionState } from './session-codec.js';
import { SkippedKeys } from './skipped-keys.js';

export type SessionRole = 'initiator' | 'responder';

/** Our sending side: a chain we are using, or a peer key we must answer with a new one. */
export type SendingRatchet =
  | { readonly kind: 'active'; readonly chain: SenderChain }
  | { readonly kind: 'inactive'; readonly theirRatchetKey: RemoteRatchetKey };

export interface SessionOptions {
  /** Defaults to `defaultBackend`. Not part of the serialized state. */
  readonly backend?: CryptoBackend;
  /** Defaults to the platform CSPRNG. Not part of the serialized state. */
  readonly random?: RandomSource;
}

/** Everything a session is made of; the codec reads and writes exactly this. */
export interface SessionState {
  readonly role: SessionRole;
  readonly localIdentityKey: Uint8Array;
  readonly remoteIdentityKey: Uint8Array;
  /** The initiator's ephemeral key EK_A: names the handshake this session came from. */
  readonly baseKey: Uint8Array;
  rootKey: RootKey;
  sending: SendingRatchet;
  /** Length of our previous sending chain (the PN header field). */
  previousChainLength: number;
  receiverChains: ReceiverChain[];
  skipped: SkippedKeys;
  /**
   * Initiator until the first reply: the encoded handshake part that is put in front of
   * every message, so the responder can set the session up from whichever arrives first.
   */
  pendingHandshake: Uint8Array | undefined;
  /**
   * Responder: SHA-256 of the handshake part it accepted, so a repeated initial message
   * is recognised exactly (any change to it is a forgery, not a new session).
   */
  handshakeDigest: Uint8Array | undefined;
}

/** Parameters the handshake hands to the ratchet; not part of the public API. */
export interface NewSessionParams extends SessionOptions {
  /** The 32-byte handshake secret SK. */
  readonly sharedSecret: Uint8Array;
  readonly localIdentityKey: Uint8Array;
  readonly remoteIdentityKey: Uint8Array;
  readonly baseKey: Uint8Array;
}

function decryptFailed(): CryptoError {
  return new CryptoError('DECRYPT_FAILED', 'decryption failed');
}

/**
 * SK -> (root key, first chain key). The initiator's first sending chain and the
 * responder's first receiving chain both start here, so the first message needs no DH
 * beyond the handshake's; the DH ratchet starts with the responder's first reply.
 */
function initialKeys(backend: CryptoBackend, sharedSecret: Uint8Array): { rootKey: RootKey; chainKey: ChainKey } {
  const out = backend.hkdfSha256(sharedSecret, new Uint8Array(32), INITIAL_KDF_INFO, 64);
  return { rootKey: new RootKey(out.subarray(0, 32)), chainKey: new ChainKey(out.subarray(32, 64), 0) };
}

export class Session {
  readonly #backend: CryptoBackend;
  readonly #random: RandomSource;
  readonly #state: SessionState;
  /** Associated data prefix (initiator IK || responder IK) followed by room for a header. */
  readonly #aad: Uint8Array;
  readonly #adLength: number;

  /** Use initiateSession / acceptSession, or Session.deserialize. */
  constructor(state: SessionState, options: SessionOptions = {}) {
    this.#backend = options.backend ?? defaultBackend;
    this.#random = options.random ?? systemRandom;
    this.#state = state;
    const [first, second] =
      state.role === 'initiator'
        ? [state.localIdentityKey, state.remoteIdentityKey]
        : [state.remoteIdentityKey, state.localIdentityKey];
    this.#adLength = first.length + second.length;
    // Reused for every message: the backends read the AAD synchronously and keep no
    // reference, and only the header part changes.
    this.#aad = new Uint8Array(this.#adLength + RATCHET_HEADER_BYTES);
    this.#aad.set(first, 0);
    this.#aad.set(second, first.length);
  }

  /** The initiator's side, right after the handshake; `handshake` prefixes each message until a reply. */
  static initiator(params: NewSessionParams, handshake: Uint8Array): Session {
    const backend = params.backend ?? defaultBackend;
    const random = params.random ?? systemRandom;
    const { rootKey, chainKey } = initialKeys(backend, params.sharedSecret);
    const ratchetKey = RatchetKeyPair.generate(backend, random);
    return new Session(
      {
        role: 'initiator',
        localIdentityKey: params.localIdentityKey,
        remoteIdentityKey: params.remoteIdentityKey,
        baseKey: params.baseKey,
        rootKey,
        sending: { kind: 'active', chain: new SenderChain(ratchetKey, chainKey) },
        previousChainLength: 0,
        receiverChains: [],
        skipped: new SkippedKeys(),
        pendingHandshake: handshake,
        handshakeDigest: undefined,
      },
      { backend, random },
    );
  }

  /** The responder's side, from SK and the initiator's first ratchet key. */
  static responder(params: NewSessionParams, theirRatchetKey: Uint8Array, handshake: Uint8Array): Session {
    const backend = params.backend ?? defaultBackend;
    const { rootKey, chainKey } = initialKeys(backend, params.sharedSecret);
    const remote = new RemoteRatchetKey(copyBytes(theirRatchetKey));
    return new Session(
      {
        role: 'responder',
        localIdentityKey: params.localIdentityKey,
        remoteIdentityKey: params.remoteIdentityKey,
        baseKey: params.baseKey,
        rootKey,
        sending: { kind: 'inactive', theirRatchetKey: remote },
        previousChainLength: 0,
        receiverChains: [new ReceiverChain(remote, chainKey)],
        skipped: new SkippedKeys(),
        pendingHandshake: undefined,
        handshakeDigest: backend.sha256(handshake),
      },
      params,
    );
  }

  get role(): SessionRole {
    return this.#state.role;
  }

  get localIdentityKey(): Uint8Array {
    return this.#state.localIdentityKey.slice();
  }

  get remoteIdentityKey(): Uint8Array {
    return this.#state.remoteIdentityKey.slice();
  }

  /** The initiator's ephemeral key of the handshake this session came from. */
  get baseKey(): Uint8Array {
    return this.#state.baseKey.slice();
  }

  /** True while the initiator has not yet received a reply (messages carry the handshake). */
  get awaitingReply(): boolean {
    return this.#state.pendingHandshake !== undefined;
  }

  /**
   * Overwrites the root, chain and message keys this session holds, for a session that
   * is being discarded (replaced, or set up from a message that failed). The session
   * cannot be used afterwards.
   */
  wipe(): void {
    const st = this.#state;
    st.rootKey.wipe();
    if (st.sending.kind === 'active') st.sending.chain.chainKey.wipe();
    for (const chain of st.receiverChains) chain.chainKey.wipe();
    st.skipped.clear();
  }

  /** Versioned binary form of the whole state (see session-codec.ts). Holds secrets. */
  serialize(): Uint8Array {
    return encodeSessionState(this.#state);
  }

  /** Restores a serialized session. Throws UNSUPPORTED_VERSION or INVALID_STATE. */
  static deserialize(bytes: Uint8Array, options: SessionOptions = {}): Session {
    return new Session(decodeSessionState(bytes), options);
  }

  /**
   * Encrypts one message. While the initiator awaits a reply the result is an initial
   * message (handshake part + ratchet message), a ratchet message otherwise.
   */
  encrypt(plaintext: Uint8Array): Uint8Array {
    assertAnyBytes(plaintext, 'plaintext');
    const backend = this.#backend;
    const st = this.#state;
    const sending = st.sending;
    let chain: SenderChain;
    let rootKey = st.rootKey;
    if (sending.kind === 'inactive') {
      // Start the next sending chain: a fresh ratchet key answering the peer's latest.
      const ours = RatchetKeyPair.generate(backend, this.#random);
      const step = rootKey.advance(backend, ours, sending.theirRatchetKey);
      chain = new SenderChain(ours, step.chainKey);
      rootKey = step.rootKey;
    } else {
      chain = sending.chain;
    }
    const ck = chain.chainKey;
    const messageKey = ck.messageKey(backend);
    const next = ck.next(backend);

    const aad = this.#aad;
    const adLength = this.#adLength;
    writeRatchetHeader(aad, adLength, chain.ratchetKey.publicKey, st.previousChainLength, ck.index);
    const sealed = messageKey.seal(backend, plaintext, aad);
    messageKey.wipe();

    const prefix = st.pendingHandshake;
    const offset = prefix === undefined ? 0 : prefix.length;
    const out = new Uint8Array(offset + RATCHET_HEADER_BYTES + sealed.length);
    if (prefix !== undefined) out.set(prefix, 0);
    out.set(aad.subarray(adLength), offset);
    out.set(sealed, offset + RATCHET_HEADER_BYTES);

    // Commit. Keys that are replaced are wiped: a later compromise of this state must
    // not reveal them (forward secrecy), and each message key seals one message only.
    if (sending.kind === 'inactive') {
      st.rootKey.wipe();
      st.rootKey = rootKey;
      st.sending = { kind: 'active', chain };
    }
    chain.chainKey = next;
    ck.wipe();
    return out;
  }

  /**
   * Encrypts one message and returns it with the session state after it (serialize()).
   *
   * Message keys use a fixed nonce, which is safe only because each key seals exactly
   * one message — and that holds only if the session never goes back to an earlier
   * state. Persist `state` before `message` leaves the device: a crash after sending with
   * the old state still stored would, on restart, encrypt the next message under the
   * same key as the last one. This is the path the SDK's outbox takes.
   */
  seal(plaintext: Uint8Array): { readonly message: Uint8Array; readonly state: Uint8Array } {
    const message = this.encrypt(plaintext);
    return { message, state: this.serialize() };
  }

  /**
   * Decrypts a ratchet message, or a repeat of the initial message that created this
   * (responder) session. Throws DECRYPT_FAILED for anything that fails authentication,
   * REPLAYED_MESSAGE for a message already decrypted, TOO_MANY_SKIPPED when the header
   * runs too far ahead, INVALID_MESSAGE / UNSUPPORTED_VERSION for malformed input, and
   * INVALID_STATE for an initial message of a different handshake (start a new session
   * with acceptSession). The session is unchanged whenever it throws.
   */
  decrypt(message: Uint8Array): Uint8Array {
    if (sessionMessageType(message) === 'initial') return this.#decryptRepeatedInitial(message);
    return this.#decryptRatchet(decodeRatchetMessage(message));
  }

  #decryptRepeatedInitial(message: Uint8Array): Uint8Array {
    const st = this.#state;
    const initial = decodeInitialMessage(message);
    if (
      st.role !== 'responder' ||
      !equalBytes(initial.baseKey, st.baseKey) ||
      !equalBytes(initial.identityKey, st.remoteIdentityKey)
    ) {
      throw new CryptoError('INVALID_STATE', 'initial message of another handshake; accept it as a new session');
    }
    const digest = st.handshakeDigest;
    if (digest === undefined || !equalBytes(this.#backend.sha256(message.subarray(0, INITIAL_HANDSHAKE_BYTES)), digest)) {
      throw decryptFailed();
    }
    return this.#decryptRatchet(decodeRatchetMessage(initial.ratchetMessage));
  }

  #aadFor(header: Uint8Array): Uint8Array {
    this.#aad.set(header, this.#adLength);
    return this.#aad;
  }

  #findChain(ratchetKey: Uint8Array): ReceiverChain | undefined {
    for (const chain of this.#state.receiverChains) if (chain.ratchetKey.matches(ratchetKey)) return chain;
    return undefined;
  }

  #decryptRatchet(msg: RatchetMessage): Uint8Array {
    const backend = this.#backend;
    const st = this.#state;
    const chain = this.#findChain(msg.ratchetKey);

    if (chain !== undefined) {
      if (msg.index < chain.chainKey.index) {
        // Behind the chain: either a skipped key is waiting for it, or it was used.
        const skippedKey = st.skipped.get(chain.ratchetKey, msg.index);
        if (skippedKey === undefined) throw new CryptoError('REPLAYED_MESSAGE', 'message already received');
        return this.#openSkipped(chain.ratchetKey, skippedKey, msg);
      }
      const advance = advanceChain(backend, chain.chainKey, msg.index, true);
      let plaintext: Uint8Array;
      try {
        plaintext = (advance.messageKey as MessageKey).open(backend, msg.sealed, this.#aadFor(msg.header));
      } catch (err) {
        discardAdvance(advance, chain.chainKey);
        throw err;
      }
      // Commit.
      advance.messageKey?.wipe();
      const old = chain.chainKey;
      chain.chainKey = advance.next;
      old.wipe();
      if (advance.skipped.length > 0) st.skipped.add(chain.ratchetKey, advance.skipped);
      this.#receivedReply();
      return plaintext;
    }

    // A ratchet key we no longer have a chain for may still have skipped keys stored.
    const remote = new RemoteRatchetKey(copyBytes(msg.ratchetKey));
    const stored = st.skipped.get(remote, msg.index);
    if (stored !== undefined) return this.#openSkipped(remote, stored, msg);
    return this.#decryptNewChain(remote, msg);
  }

  #openSkipped(ratchetKey: RemoteRatchetKey, key: MessageKey, msg: RatchetMessage): Uint8Array {
    const plaintext = key.open(this.#backend, msg.sealed, this.#aadFor(msg.header));
    this.#state.skipped.delete(ratchetKey, msg.index);
    this.#receivedReply();
    return plaintext;
  }

  /** A new peer ratchet key: one DH ratchet step, on a copy. */
  #decryptNewChain(remote: RemoteRatchetKey, msg: RatchetMessage): Uint8Array {
    const backend = this.#backend;
    const st = this.#state;
    const sending = st.sending;
    // Only the key pair of our active sending chain can be answered: the peer makes a
    // new ratchet key only after seeing one of ours. When inactive there is none.
    if (sending.kind !== 'active') throw decryptFailed();
    if (msg.index > MAX_SKIPPED_KEYS_PER_MESSAGE) {
      throw new CryptoError('TOO_MANY_SKIPPED', `message is ${msg.index} ahead of its chain`);
    }
    // Keys left on the peer's previous chain (its header says how long that chain got).
    const previous = st.receiverChains[0];
    let previousAdvance: ChainAdvance | undefined;
    if (previous !== undefined && msg.previousChainLength > previous.chainKey.index) {
      previousAdvance = advanceChain(backend, previous.chainKey, msg.previousChainLength, false);
    }
    let step: { rootKey: RootKey; chainKey: ChainKey };
    try {
      step = st.rootKey.advance(backend, sending.chain.ratchetKey, remote);
    } catch (cause) {
      // A low-order "ratchet key" is a forgery like any other.
      if (cause instanceof CryptoError && cause.code === 'INVALID_KEY') throw decryptFailed();
      throw cause;
    }
    const advance = advanceChain(backend, step.chainKey, msg.index, true);
    let plaintext: Uint8Array;
    try {
      plaintext = (advance.messageKey as MessageKey).open(backend, msg.sealed, this.#aadFor(msg.header));
    } catch (err) {
      // Nothing derived here is kept: wipe it all, leave the session as it was.
      if (previous !== undefined && previousAdvance !== undefined) discardAdvance(previousAdvance, previous.chainKey);
      discardAdvance(advance, step.chainKey);
      step.chainKey.wipe();
      step.rootKey.wipe();
      throw err;
    }

    // Commit, wiping every key that is replaced or no longer needed.
    advance.messageKey?.wipe();
    step.chainKey.wipe();
    if (previous !== undefined && previousAdvance !== undefined) {
      const old = previous.chainKey;
      previous.chainKey = previousAdvance.next;
      if (old !== previousAdvance.next) old.wipe();
      st.skipped.add(previous.ratchetKey, previousAdvance.skipped);
    }
    st.rootKey.wipe();
    st.rootKey = step.rootKey;
    st.receiverChains.unshift(new ReceiverChain(remote, advance.next));
    for (const dropped of st.receiverChains.splice(MAX_RECEIVER_CHAINS)) dropped.chainKey.wipe();
    if (advance.skipped.length > 0) st.skipped.add(remote, advance.skipped);
    st.previousChainLength = sending.chain.chainKey.index;
    sending.chain.chainKey.wipe();
    // Our ratchet private key is dropped here: nothing can need it any more.
    st.sending = { kind: 'inactive', theirRatchetKey: remote };
    this.#receivedReply();
    return plaintext;
  }

  #receivedReply(): void {
    this.#state.pendingHandshake = undefined;
  }
}
redactSecrets(Session, 'Session');
