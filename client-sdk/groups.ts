/**
 * Group messaging with sender keys: each member device encrypts a group message once
 * with its own sender key, signed, and the relay carries the same ciphertext to every
 * member device. Sender keys are handed out over the pairwise sessions (a distribution
 * payload); when a member leaves (or one of their devices is revoked) the sender key is
 * rotated and the new one goes to the remaining devices only, so a removed member cannot
 * read what is sent afterwards.
 *
 * Stored: per group we send to, the member list, the devices that hold our current
 * sender key, and its state ("out:<group>"); per (sender device, group) the sender keys
 * we hold ("in:<user> <device> <group>"), with an index from key id to group
 * ("idx:<user> <device> <key id>") so a group message, which names only its key id,
 * finds its group without the relay learning the group id.
 */
import { CryptoError } from '../crypto/errors.js';
import { InboundSenderKeys, OutboundSenderKey } from '../crypto/group/index.js';
import { decodeDistribution } from '../crypto/group/wire.js';
import type { CryptoBackend } from '../crypto/primitives/backend.js';
import { readU32be } from '../crypto/primitives/bytes.js';
import type { RandomSource } from '../crypto/primitives/random.js';
import { NS, type StoreTx, decodeRecord, encodeRecord } from './stores/store.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

interface OutboundRecord {
  v: 1;
  members: string[];
  /** "user device" of every device that holds the current generation. */
  holders: string[];
  state: Uint8Array;
}

export interface GroupTarget {
  readonly userId: string;
  readonly deviceId: string;
}

const holder = (t: GroupTarget): string => `${t.userId} ${t.deviceId}`;

export class GroupKeys {
  constructor(
    private readonly backend: CryptoBackend,
    private readonly random: RandomSource,
  ) {}

  /**
   * Our sender key for `groupId`, brought in line with `devices` (every member device
   * that should read what we send now). Rotated when any device that held it is no longer
   * among them. Returns the distribution for the devices that need it, and the key.
   */
  async prepare(tx: StoreTx, groupId: string, members: readonly string[], devices: readonly GroupTarget[]): Promise<{ key: OutboundSenderKey; distribution: Uint8Array | undefined; needIt: GroupTarget[] }> {
    const raw = await tx.get(NS.groups, `out:${groupId}`);
    const rec = raw === undefined ? undefined : decodeRecord<OutboundRecord>(raw);
    const wanted = new Set(devices.map(holder));
    let key: OutboundSenderKey;
    let holders: string[];
    if (rec === undefined) {
      key = OutboundSenderKey.create(encoder.encode(groupId), { backend: this.backend, random: this.random });
      holders = [];
    } else {
      key = OutboundSenderKey.deserialize(rec.state, { backend: this.backend, random: this.random });
      holders = rec.holders;
      if (holders.some((h) => !wanted.has(h))) {
        // Someone who could read our messages must not read the next ones.
        key.rotate();
        holders = [];
      }
    }
    const needIt = devices.filter((d) => !holders.includes(holder(d)));
    const distribution = needIt.length > 0 ? key.distributionMessage() : undefined;
    tx.put(NS.groups, `out:${groupId}`, encodeRecord({ v: 1, members: [...members], holders: [...new Set([...holders, ...needIt.map(holder)])], state: key.serialize() } satisfies OutboundRecord));
    return { key, distribution, needIt };
  }

  /** Encrypts a padded payload for the group and stores the advanced state. */
  async seal(tx: StoreTx, groupId: string, key: OutboundSenderKey, padded: Uint8Array): Promise<Uint8Array> {
    const raw = await tx.get(NS.groups, `out:${groupId}`);
    if (raw === undefined) throw new CryptoError('INVALID_STATE', `no sender key for group ${groupId}`);
    const rec = decodeRecord<OutboundRecord>(raw);
    const { message, state } = key.seal(padded);
    tx.put(NS.groups, `out:${groupId}`, encodeRecord({ ...rec, state }));
    return message;
  }

  /** A distribution received over the pairwise session with `from`. */
  async receiveDistribution(tx: StoreTx, from: GroupTarget, groupId: string, distribution: Uint8Array): Promise<void> {
    const d = decodeDistribution(distribution);
    if (decoder.decode(d.groupId) !== groupId) throw new CryptoError('INVALID_MESSAGE', 'the distribution names another group than its payload');
    const slot = `in:${holder(from)} ${groupId}`;
    const raw = await tx.get(NS.senderKeys, slot);
    let keys: InboundSenderKeys;
    if (raw === undefined) keys = InboundSenderKeys.fromDistribution(distribution, { backend: this.backend });
    else {
      keys = InboundSenderKeys.deserialize(raw, { backend: this.backend });
      keys.processDistribution(distribution);
    }
    tx.put(NS.senderKeys, slot, keys.serialize());
    tx.put(NS.senderKeys, `idx:${holder(from)} ${d.keyId}`, encoder.encode(groupId));
  }

  /** Decrypts a group message from `from`: the group and the padded payload. */
  async open(tx: StoreTx, from: GroupTarget, message: Uint8Array): Promise<{ groupId: string; padded: Uint8Array }> {
    if (message.length < 5) throw new CryptoError('INVALID_MESSAGE', 'group message too short');
    const keyId = readU32be(message, 1);
    const idx = await tx.get(NS.senderKeys, `idx:${holder(from)} ${keyId}`);
    if (idx === undefined) throw new CryptoError('INVALID_STATE', `no sender key ${keyId} from ${holder(from)}`);
    const groupId = decoder.decode(idx);
    const slot = `in:${holder(from)} ${groupId}`;
    const raw = await tx.get(NS.senderKeys, slot);
    if (raw === undefined) throw new CryptoError('INVALID_STATE', `no sender keys for group ${groupId}`);
    const keys = InboundSenderKeys.deserialize(raw, { backend: this.backend });
    const padded = keys.decrypt(message);
    tx.put(NS.senderKeys, slot, keys.serialize());
    return { groupId, padded };
  }
}
