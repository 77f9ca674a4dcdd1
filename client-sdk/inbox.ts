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
import { SdkError } from './errors.js';
import type { DeliverFrame } from '../protocol/envelopes.js';
import { TxPreKeyStore } from './device.js';
import type { Directory } from './directory.js';
import type { FlagQueue, Flag, FlagCode } from './flags.js';
import type { GroupKeys } from './groups.js';
import { DEDUPE_RETENTION_MS, INBOX_BATCH_MAX, INBOX_RETRY_BASE_MS, INBOX_RETRY_MAX_MS, MAX_DEDUPE_ENTRIES } from './limits.js';
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
  /** The user it was sent to (undefined for a group message). */
  readonly to: string | undefined;
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
  /** A batch could not be handled (not stored, not acknowledged): reconnect after at
   * least `delayMs`, so that the relay delivers it again. */
  resync(delayMs: number): void;
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

/** Stored messages sort by mailbox sequence; the envelope id keeps two envelopes a
 * relay delivers under one sequence apart (neither overwrites the other). */
export function inboxKey(seq: number, envelopeId: Uint8Array): string {
  return `m:${String(seq).padStart(16, '0')}:${encodeBase64url(envelopeId)}`;
}

/** A DELIVER, or an announced expiry (nothing to store; acknowledged through `seq`). */
type Item = {
  readonly seq: number;
  readonly frame: DeliverFrame | undefined;
  /** A DELIVER that did not decode: flagged, then acknowledged. */
  readonly malformed?: { envelopeId: Uint8Array; senderUserId: string; senderDeviceId: string; detail: string } | undefined;
  /** Envelopes the relay announced as expired: flagged, then acknowledged. */
  readonly expired?: { from: number; to: number } | undefined;
};

export class Inbox {
  readonly #queue: Item[] = [];
  #running = false;
  /** A batch failed: nothing more is handled or acknowledged on this connection. */
  #halted = false;
  /** Batches that failed in a row (the reconnect waits longer each time). */
  #failures = 0;

  constructor(private readonly c: InboxContext) {}

  /** A new connection: the relay delivers again from after the last acknowledgement. */
  reset(): void {
    this.#halted = false;
    this.#queue.length = 0;
  }

  deliver(frame: DeliverFrame): void {
    this.c.fault?.('delivered', frame.seq);
    this.#push({ seq: frame.seq, frame });
  }

  /** A DELIVER whose body does not decode: flag it and acknowledge it like any other. */
  malformed(header: { seq: number; envelopeId: Uint8Array; senderUserId: string; senderDeviceId: string }, detail: string): void {
    this.#push({ seq: header.seq, frame: undefined, malformed: { ...header, detail } });
  }

  /** Expired envelopes will never come: flag them and acknowledge through them. */
  expired(from: number, to: number): void {
    this.#push({ seq: to, frame: undefined, expired: { from, to } });
  }

  #push(item: Item): void {
    if (this.#halted) return; // delivered again on the next connection
    this.#queue.push(item);
    if (!this.#running) void this.#run();
  }

  async #run(): Promise<void> {
    this.#running = true;
    try {
      while (this.#queue.length > 0 && !this.#halted) {
        const batch = this.#queue.splice(0, INBOX_BATCH_MAX);
        try {
          await this.#handle(batch);
          this.#failures = 0;
        } catch (err) {
          // Nothing of the batch was committed or acknowledged. Acknowledging anything
          // after it would drop it at the relay, so this connection handles nothing more:
          // the client reconnects and the relay delivers it again.
          this.#halted = true;
          this.#queue.length = 0;
          this.#failures++;
          this.c.problem(err);
          this.c.resync(Math.min(INBOX_RETRY_MAX_MS, INBOX_RETRY_BASE_MS * 2 ** Math.min(this.#failures - 1, 16)));
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
      } catch (err) {
        // A list that does not verify is the relay's answer (flagged by the directory):
        // its envelopes are from no verified device. Any other failure (the relay
        // unreachable, rate limited) says nothing about the sender: the batch fails and
        // is delivered again.
        if (!(err instanceof SdkError && err.code === 'DEVICE_LIST_INVALID')) throw err;
        lists.set(f.senderUserId, undefined);
      }
    }
    const heal: Array<{ userId: string; deviceId: string; envelopeId: Uint8Array }> = [];
    const initial = real.some((f) => f.payload[0] === 0x12);
    const stored = await this.c.db.run(async (tx) => {
      const out: Array<{ key: string; record: InboxRecord }> = [];
      for (const item of batch) {
        const f = item.frame;
        if (item.expired) {
          const { from, to } = item.expired;
          this.c.flags.add(tx, {
            code: 'ENVELOPES_EXPIRED',
            userId: this.c.userId,
            deviceId: this.c.deviceId,
            seq: to,
            at: this.c.now(),
            detail: `the relay announced envelopes ${from}..${to} of this mailbox as expired before they were delivered`,
            evidence: { from, to },
          });
          continue;
        }
        if (item.malformed) {
          const m = item.malformed;
          const seenKey = `${m.senderUserId} ${m.senderDeviceId} ${encodeBase64url(m.envelopeId)}`;
          if ((await tx.get(NS.seen, seenKey)) !== undefined) continue; // delivered again
          tx.put(NS.seen, seenKey, encodeRecord({ at: this.c.now() }));
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
        if (f === undefined) continue;
        const seenKey = `${f.senderUserId} ${f.senderDeviceId} ${encodeBase64url(f.envelopeId)}`;
        if ((await tx.get(NS.seen, seenKey)) !== undefined) continue; // delivered again
        tx.put(NS.seen, seenKey, encodeRecord({ at: this.c.now() }));
        const r = await this.#open(tx, f, lists.get(f.senderUserId));
        this.c.fault?.('decrypted', f.seq);
        if (r.kind === 'message') {
          const key = inboxKey(f.seq, f.envelopeId);
          tx.put(NS.inbox, key, encodeRecord(r.record));
          out.push({ key, record: r.record });
        } else if (r.kind === 'flag') {
          this.c.flags.add(tx, r.flag);
          if (r.heal) heal.push({ userId: f.senderUserId, deviceId: f.senderDeviceId, envelopeId: f.envelopeId });
        }
      }
      return out;
    });
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
      if (err instanceof SdkError && err.code === 'STORE_CORRUPT') {
        // Our stored state for this sender does not read: the envelope is lost to us, and
        // the sender is asked for a new session, as for any broken session.
        return { kind: 'flag', flag: flag('DECRYPT_FAILED', `the stored session state does not read: ${err.message}`, { error: err.code }), heal: kind !== GROUP_MESSAGE_KIND };
      }
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
        if (groupId === undefined && payload.groupId !== undefined) {
          return { kind: 'flag', flag: flag('MALFORMED_ENVELOPE', 'a group message that did not come under its sender key'), heal: false };
        }
        // Another user's message is for us; only our own devices send us copies of what
        // they sent to someone else.
        if (payload.to !== undefined && payload.to !== this.c.userId && f.senderUserId !== this.c.userId) {
          return { kind: 'flag', flag: flag('MALFORMED_ENVELOPE', `a message addressed to ${payload.to}, not to this user`), heal: false };
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
            to: payload.to,
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

