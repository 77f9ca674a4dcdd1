/**
 * Versioned binary encoding of a session's state, for the app's session store. The
 * encoding holds secrets (root, chain and message keys, our ratchet private key): store
 * it as such. All integers are big-endian.
 *
 *   u8   state version (1)
 *   u8   role: 0 initiator, 1 responder
 *   u8   flags: bit 0 sending active, bit 1 pending handshake, bit 2 handshake digest
 *   32   local identity key | 32 remote identity key | 32 base key | 32 root key
 *   u32  previous sending chain length
 *   active:   32 ratchet private key | 32 ratchet public key | 32 chain key | u32 index
 *   inactive: 32 peer ratchet key to answer
 *   u8   receiving chain count (<= MAX_RECEIVER_CHAINS), newest first, each:
 *          32 peer ratchet key | 32 chain key | u32 next index
 *   u32  skipped key count (<= MAX_SKIPPED_KEYS_STORED), oldest first, each:
 *          32 peer ratchet key | u32 message number | 32 message key
 *   pending handshake: u16 length | bytes
 *   handshake digest:  32
 *
 * Decoding checks every count against its limit and rejects trailing bytes; malformed
 * input is INVALID_STATE, another version UNSUPPORTED_VERSION.
 */
import { CryptoError } from '../errors.js';
import { MAX_RECEIVER_CHAINS, MAX_SKIPPED_KEYS_STORED } from '../limits.js';
import { ByteReader, ByteWriter } from './byte-codec.js';
import { ChainKey } from './chain-key.js';
import { INITIAL_HANDSHAKE_BYTES } from '../handshake/initial-message.js';
import { MessageKey } from './message-key.js';
import { RatchetKeyPair, RemoteRatchetKey } from './ratchet-key.js';
import { ReceiverChain } from './receiver-chain.js';
import { RootKey } from './root-key.js';
import { SenderChain } from './sender-chain.js';
import type { SessionState } from './session.js';
import { SkippedKeys } from './skipped-keys.js';

export const SESSION_STATE_VERSION = 1;

const FLAG_ACTIVE = 0x01;
const FLAG_PENDING = 0x02;
const FLAG_DIGEST = 0x04;

export function encodeSessionState(st: Readonly<SessionState>): Uint8Array {
  const w = new ByteWriter(512 + st.skipped.size * 68);
  const sending = st.sending;
  w.u8(SESSION_STATE_VERSION);
  w.u8(st.role === 'initiator' ? 0 : 1);
  w.u8(
    (sending.kind === 'active' ? FLAG_ACTIVE : 0) |
      (st.pendingHandshake !== undefined ? FLAG_PENDING : 0) |
      (st.handshakeDigest !== undefined ? FLAG_DIGEST : 0),
  );
  w.bytes(st.localIdentityKey).bytes(st.remoteIdentityKey).bytes(st.baseKey).bytes(st.rootKey.exportBytes());
  w.u32(st.previousChainLength);
  if (sending.kind === 'active') {
    const { ratchetKey, chainKey } = sending.chain;
    w.bytes(ratchetKey.exportPrivateKey()).bytes(ratchetKey.publicKey).bytes(chainKey.exportBytes()).u32(chainKey.index);
  } else {
    w.bytes(sending.theirRatchetKey.bytes);
  }
  w.u8(st.receiverChains.length);
  for (const chain of st.receiverChains) {
    w.bytes(chain.ratchetKey.bytes).bytes(chain.chainKey.exportBytes()).u32(chain.chainKey.index);
  }
  w.u32(st.skipped.size);
  for (const { ratchetKey, messageKey } of st.skipped.entries()) {
    w.bytes(ratchetKey.bytes).u32(messageKey.index).bytes(messageKey.exportBytes());
  }
  if (st.pendingHandshake !== undefined) w.u16(st.pendingHandshake.length).bytes(st.pendingHandshake);
  if (st.handshakeDigest !== undefined) w.bytes(st.handshakeDigest);
  return w.finish();
}

export function decodeSessionState(bytes: Uint8Array): SessionState {
  if (!(bytes instanceof Uint8Array) || bytes.length === 0) throw new CryptoError('INVALID_STATE', 'session state: empty');
  if (bytes[0] !== SESSION_STATE_VERSION) {
    throw new CryptoError('UNSUPPORTED_VERSION', `session state version ${bytes[0]} is not supported`);
  }
  const r = new ByteReader(bytes, 'INVALID_STATE', 'session state');
  r.u8();
  const roleByte = r.u8();
  if (roleByte > 1) throw r.fail('unknown role');
  const flags = r.u8();
  if ((flags & ~(FLAG_ACTIVE | FLAG_PENDING | FLAG_DIGEST)) !== 0) throw r.fail('unknown flags');
  const role = roleByte === 0 ? 'initiator' : 'responder';
  const localIdentityKey = r.bytes(32);
  const remoteIdentityKey = r.bytes(32);
  const baseKey = r.bytes(32);
  const rootKey = new RootKey(r.bytes(32));
  const previousChainLength = r.u32();
  let sending: SessionState['sending'];
  if ((flags & FLAG_ACTIVE) !== 0) {
    const ratchetKey = new RatchetKeyPair(r.bytes(32), r.bytes(32));
    const chainKey = new ChainKey(r.bytes(32), r.u32());
    sending = { kind: 'active', chain: new SenderChain(ratchetKey, chainKey) };
  } else {
    sending = { kind: 'inactive', theirRatchetKey: new RemoteRatchetKey(r.bytes(32)) };
  }
  const chainCount = r.u8();
  if (chainCount > MAX_RECEIVER_CHAINS) throw r.fail('too many receiving chains');
  const receiverChains: ReceiverChain[] = [];
  for (let i = 0; i < chainCount; i++) {
    const ratchetKey = new RemoteRatchetKey(r.bytes(32));
    receiverChains.push(new ReceiverChain(ratchetKey, new ChainKey(r.bytes(32), r.u32())));
  }
  const skippedCount = r.u32();
  if (skippedCount > MAX_SKIPPED_KEYS_STORED) throw r.fail('too many skipped keys');
  const skipped = new SkippedKeys();
  // Keys of one chain share one RemoteRatchetKey object, as they do in a live session.
  const remotes = new Map<string, RemoteRatchetKey>();
  for (const chain of receiverChains) remotes.set(chain.ratchetKey.id, chain.ratchetKey);
  for (let i = 0; i < skippedCount; i++) {
    const candidate = new RemoteRatchetKey(r.bytes(32));
    const index = r.u32();
    const key = new MessageKey(r.bytes(32), index);
    let remote = remotes.get(candidate.id);
    if (remote === undefined) {
      remote = candidate;
      remotes.set(candidate.id, candidate);
    }
    skipped.add(remote, [key]);
  }
  if (skipped.size !== skippedCount) throw r.fail('duplicate skipped key');
  let pendingHandshake: Uint8Array | undefined;
  if ((flags & FLAG_PENDING) !== 0) {
    const length = r.u16();
    if (length !== INITIAL_HANDSHAKE_BYTES) throw r.fail('pending handshake has the wrong length');
    pendingHandshake = r.bytes(length);
  }
  const handshakeDigest = (flags & FLAG_DIGEST) !== 0 ? r.bytes(32) : undefined;
  r.end();
  return {
    role,
    localIdentityKey,
    remoteIdentityKey,
    baseKey,
    rootKey,
    sending,
    previousChainLength,
    receiverChains,
    skipped,
    pendingHandshake,
    handshakeDigest,
  };
}
