/**
 * Receiving, exactly once into the application. For each DELIVER, in mailbox order:
 * decrypt, then store the advanced session state together with the message (or the flag
 * saying why there is none) in one transaction, then ACK. The relay delivers at least
 * once; an envelope id seen before is acknowledged and dropped. A stored message is
 * offered to the application until it is marked done, also after a restart; once done it
 * is never offered again.
 *
 * Everything that needs the network (the sender's verified device list) happens before
 * the transaction, so a batch is decrypted and committed without waiting on anything.
 */
import { CryptoError } from '../crypto/errors.js';
import { GROUP_MESSAGE_KIND } from '../crypto/group/wire.js';
import type { CryptoBackend } from '../crypto/primitives/backend.js';
import { unpad } from '../crypto/padding.js';
import { encodeBase64url } from '../protocol/base64url.js';
import type { DeliverFrame } from '../protocol/envelopes.js';
import { TxPreKeyStore } from './device.js';
import type { Directory } from './directory.js';
import type { FlagQueue, Flag, FlagCode } from './flags.js';
import type { GroupKeys } from './groups.js';
import { DEDUPE_RETENTION_MS, INBOX_BATCH_MAX, MAX_DEDUPE_ENTRIES } from './limits.js';
import { type BodyKind, decodePayload } from './payload.js';
import type { Sessions } from './sessions.js';
import { NS, type StoreTx, type Transactor, decodeRecord, encodeRecord } from './stores/store.js';

/** A message as stored until the application marks it done. */
export interface InboxRecord {
  readonly v: 1;
  readonly seq: number;
  readonly envelopeId: Uint8Array;
  readonly messageId: Uint8Array;
  readonly senderUserId: string;
  readonly senderDeviceId: string;
  readonly groupId: string | undefined;
  readonly kind: BodyKind;
  readonly body: Uint8Array;
  readonly sentAt: number;
  readonly storedAt: number;
  readonly receivedAt: number;
  readonly flags: readonly FlagCode[];
}

/** Points in receiving where a fault-injection test may stop the process. */
export type FaultPoint = 'delivered' | 'decrypted' | 'persisted' | 'acked' | 'done';
export type FaultHook = (point: FaultPoint, seq: number) => void;

export interface InboxContext {
  readonly db: Transactor;
  readonly directory: Directory;
  readonly sessions: Sessions;
  readonly groups: GroupKeys;
  readonly flags: FlagQueue;
  readonly backend: CryptoBackend;
  readonly now: () => number;
  readonly userId: string;
  readonly deviceId: string;
  ack(seq: number): void;
  /** New messages and flags were committed. */
  offered(messages: Array<{ key: string; record: InboxRecord }>): void;
  /** A device whose message did not decrypt: ask it for a new session. */
  heal(userId: string, deviceId: string, envelopeId: Uint8Array): void;
  /** A session started with us, using one-time prekeys. */
  prekeysUsed(): void;
  problem(err: unknown): void;
  readonly fault: FaultHook | undefined;
}

const PAIRWISE_KINDS = new Set([0x11, 0x12]);

export function inboxKey(seq: number): string {
  return `m:${String(seq).padStart(16, '0')}`;
}

/** A DELIVER, or an announced expiry (nothing to store; acknowledged through `seq`). */
type Item = {
  readonly seq: number;
  readonly frame: DeliverFrame | undefined;
  /** A DELIVER that did not decode: flagged, then acknowledged. */
  readonly malformed?: { envelopeId: Uint8Array; senderUserId: string; senderDeviceId: string; detail: string } | undefined;
};

export class Inbox {
  readonly #queue: Item[] = [];
  #running = false;
  /** The highest sequence handled (stored, flagged or dropped) in this run. */
  #handled = 0;

  constructor(private readonly c: InboxContext) {}

  deliver(frame: DeliverFrame): void {
    this.c.fault?.('delivered', frame.seq);
    this.#queue.push({ seq: frame.seq, frame });
    if (!this.#running) void this.#run();
  }

  /** A DELIVER whose body does not decode: flag it and acknowledge it like any other. */
  malformed(header: { seq: number; envelopeId: Uint8Array; senderUserId: string; senderDeviceId: string }, detail: string): void {
    this.#queue.push({ seq: header.seq, frame: undefined, malformed: { ...header, detail } });
    if (!this.#running) void this.#run();
  }

  /** Expired envelopes will never come: acknowledge through them. */
  expired(to: number): void {
    this.#queue.push({ seq: to, frame: undefined });
    if (!this.#running) void this.#run();
  }

  async #run(): Promise<void> {
    this.#running = true;
    try {
      while (this.#queue.length > 0) {
        const batch = this.#queue.splice(0, INBOX_BATCH_MAX);
        try {
          await this.#handle(batch);
        } catch (err) {
          // Nothing of the batch was committed or acknowledged: the relay delivers it again
          // on the next connection. Report and stop here.
          this.#queue.length = 0;
          this.c.problem(err);
          return;
        }
      }
    } finally {
      this.#running = false;
    }
  }

  async #handle(batch: Item[]): Promise<void> {
    const real = batch.flatMap((i) => (i.frame ? [i.frame] : []));
    // Before the transaction: the verified list of every sender, re-read once for a
    // device it does not list yet.
    const lists = new Map<string, Awaited<ReturnType<Directory['devices']>> | undefined>();
    for (const f of real) {
      const listed = lists.get(f.senderUserId);
      if (lists.has(f.senderUserId) && (listed === undefined || listed.device(f.senderDeviceId))) continue;
      try {
        let chain = await this.c.directory.devices(f.senderUserId);
        if (!chain.device(f.senderDeviceId)) chain = await this.c.directory.devices(f.senderUserId, { refresh: true });
        lists.set(f.senderUserId, chain);
      } catch {
        lists.set(f.senderUserId, undefined);
      }
    }
    const heal: Array<{ userId: string; deviceId: string; envelopeId: Uint8Array }> = [];
    const initial = real.some((f) => f.payload[0] === 0x12);
    let handled = this.#handled;
    const stored = await this.c.db.run(async (tx) => {
      const out: Array<{ key: string; record: InboxRecord }> = [];
      for (const item of batch) {
        if (item.seq <= handled) continue;
        handled = item.seq;
        const f = item.frame;
        if (item.malformed) {
          const m = item.malformed;
          this.c.flags.add(tx, {
            code: 'MALFORMED_ENVELOPE',
            userId: m.senderUserId,
            deviceId: m.senderDeviceId,
            envelopeId: encodeBase64url(m.envelopeId),
            seq: item.seq,
            at: this.c.now(),
            detail: `the relay delivered an envelope that does not decode: ${m.detail}`,
          });
          continue;
        }
        if (f === undefined) continue; // an announced expiry
        const seenKey = `${f.senderUserId} ${f.senderDeviceId} ${encodeBase64url(f.envelopeId)}`;
        if ((await tx.get(NS.seen, seenKey)) !== undefined) continue; // delivered again
        tx.put(NS.seen, seenKey, encodeRecord({ at: this.c.now() }));
        const r = await this.#open(tx, f, lists.get(f.senderUserId));
        this.c.fault?.('decrypted', f.seq);
        if (r.kind === 'message') {
          const key = inboxKey(f.seq);
          tx.put(NS.inbox, key, encodeRecord(r.record));
          out.push({ key, record: r.record });
        } else if (r.kind === 'flag') {
          this.c.flags.add(tx, r.flag);
          if (r.heal) heal.push({ userId: f.senderUserId, deviceId: f.senderDeviceId, envelopeId: f.envelopeId });
        }
      }
      return out;
    });
    this.#handled = handled;
    const last = batch[batch.length - 1];
    if (last) {
      this.c.fault?.('persisted', last.seq);
      this.c.ack(last.seq);
      this.c.fault?.('acked', last.seq);
    }
    this.c.offered(stored);
    for (const h of heal) this.c.heal(h.userId, h.deviceId, h.envelopeId);
    if (initial) this.c.prekeysUsed();
  }

  async #open(
    tx: StoreTx,
    f: DeliverFrame,
    list: Awaited<ReturnType<Directory['devices']>> | undefined,
  ): Promise<{ kind: 'message'; record: InboxRecord } | { kind: 'flag'; flag: Flag; heal: boolean } | { kind: 'handled' }> {
    const flag = (code: FlagCode, detail: string, evidence: Record<string, unknown> = {}): Flag => ({
      code,
      userId: f.senderUserId,
      deviceId: f.senderDeviceId,
      envelopeId: encodeBase64url(f.envelopeId),
      seq: f.seq,
      at: this.c.now(),
      detail,
      evidence: { storedAt: f.storedAtMs, bytes: f.payload.length, ...evidence },
    });
    const device = list?.device(f.senderDeviceId);
    if (device === undefined) {
      return { kind: 'flag', flag: flag('UNKNOWN_SENDER', `device ${f.senderDeviceId} is not in the verified list of ${f.senderUserId}`), heal: false };
    }
    const from = { userId: f.senderUserId, deviceId: f.senderDeviceId };
    let groupId: string | undefined;
    let padded: Uint8Array;
    const kind = f.payload[0];
    try {
      if (kind !== undefined && PAIRWISE_KINDS.has(kind)) {
        padded = await this.c.sessions.open(tx, f.senderUserId, f.senderDeviceId, device.identityKey, f.payload, new TxPreKeyStore(tx, this.c.backend));
      } else if (kind === GROUP_MESSAGE_KIND) {
        ({ groupId, padded } = await this.c.groups.open(tx, from, f.payload));
      } else {
        return { kind: 'flag', flag: flag('MALFORMED_ENVELOPE', `unknown envelope kind ${kind ?? 'none'}`), heal: false };
      }
    } catch (err) {
      if (!(err instanceof CryptoError)) throw err;
      const malformed = err.code === 'INVALID_MESSAGE' || err.code === 'UNSUPPORTED_VERSION';
      if (malformed) return { kind: 'flag', flag: flag('MALFORMED_ENVELOPE', err.message, { error: err.code }), heal: false };
      // A replay is the relay's doing, not a broken session: flag it, don't heal.
      return { kind: 'flag', flag: flag('DECRYPT_FAILED', err.message, { error: err.code }), heal: err.code !== 'REPLAYED_MESSAGE' && kind !== GROUP_MESSAGE_KIND };
    }
    let payload;
    try {
      payload = decodePayload(unpad(padded));
    } catch (err) {
      if (!(err instanceof CryptoError)) throw err;
      return { kind: 'flag', flag: flag('MALFORMED_ENVELOPE', `decrypted, but not a valid payload: ${err.message}`, { error: err.code }), heal: false };
    }
    switch (payload.type) {
      case 'message':
        if (groupId !== undefined && payload.groupId !== groupId) {
          return { kind: 'flag', flag: flag('MALFORMED_ENVELOPE', 'a group message whose payload names another group'), heal: false };
        }
        return {
          kind: 'message',
          record: {
            v: 1,
            seq: f.seq,
            envelopeId: f.envelopeId,
            messageId: payload.messageId,
            senderUserId: f.senderUserId,
            senderDeviceId: f.senderDeviceId,
            groupId: payload.groupId,
            kind: payload.kind,
            body: payload.body,
            sentAt: payload.sentAt,
            storedAt: f.storedAtMs,
            receivedAt: this.c.now(),
            flags: [],
          },
        };
      case 'distribution':
        if (groupId !== undefined) return { kind: 'flag', flag: flag('MALFORMED_ENVELOPE', 'a sender key must come over a pairwise session'), heal: false };
        try {
          await this.c.groups.receiveDistribution(tx, from, payload.groupId, payload.distribution);
        } catch (err) {
          if (!(err instanceof CryptoError)) throw err;
          return { kind: 'flag', flag: flag('MALFORMED_ENVELOPE', `a sender key that cannot be used: ${err.message}`, { error: err.code }), heal: false };
        }
        return { kind: 'handled' };
      case 'reset':
        // The session the sender just started with us is current now (sessions.open made
        // it so): nothing else to do.
        return { kind: 'handled' };
    }
  }

  /** Drops remembered envelope ids older than DEDUPE_RETENTION_MS, and the oldest beyond MAX_DEDUPE_ENTRIES. */
  async prune(): Promise<void> {
    await this.c.db.run(async (tx) => {
      const rows = (await tx.list(NS.seen)).map(([k, v]) => ({ k, at: decodeRecord<{ at: number }>(v).at })).sort((a, b) => a.at - b.at);
      const cutoff = this.c.now() - DEDUPE_RETENTION_MS;
      const excess = rows.length - MAX_DEDUPE_ENTRIES;
      rows.forEach((r, i) => {
        if (r.at < cutoff || i < excess) tx.delete(NS.seen, r.k);
      });
    });
  }
}

