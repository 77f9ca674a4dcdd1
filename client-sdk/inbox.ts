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
import { EvidenceError } from '../crypto/evidence/errors.js';
import type { ReceiptEntry, ReceiptFlag } from '../crypto/evidence/receipt.js';
import { keyFingerprint } from '../crypto/keys.js';
import type { Anomalies } from './anomalies.js';
import type { ReceiptInfo, Receipts } from './receipts.js';
import type { SignedEvents } from './signed-events.js';
import { SdkError } from './errors.js';
import { RECEIPT_FLAGS } from '../crypto/evidence/receipt.js';
import { IdentityKey } from '../crypto/identity/identity-key.js';
import type { DeliverFrame } from '../protocol/envelopes.js';
import { TxPreKeyStore } from './device.js';
import type { Directory } from './directory.js';
import type { FlagQueue, Flag, FlagCode } from './flags.js';
import type { TopicKeys } from './topic-keys.js';
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
  /** The sender's number for it in its conversation (absent from older senders). */
  readonly number?: number | undefined;
}

/** Points in receiving where a fault-injection test may stop the process. */
export type FaultPoint = 'delivered' | 'decrypted' | 'persisted' | 'acked' | 'done';
export type FaultHook = (point: FaultPoint, seq: number) => void;

export interface InboxContext {
  readonly db: Transactor;
  readonly directory: Directory;
  readonly sessions: Sessions;
  readonly groups: GroupKeys;
  readonly topicKeys: TopicKeys;
  /** A topic key generation was stored (called in its transaction; waiters read it after). */
  readonly topicKeyStored: (from: { userId: string; deviceId: string }, keyId: string) => void;
  readonly flags: FlagQueue;
  readonly anomalies: Anomalies;
  readonly receipts: Receipts;
  readonly events: SignedEvents;
  readonly backend: CryptoBackend;
  readonly now: () => number;
  /** When the current connection came up (ms): delay before it is the recipient's being offline. */
  readonly connectedAt: () => number;
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
  /** Receipts for envelopes we sent were verified and committed. */
  receiptsVerified(list: ReceiptInfo[]): void;
  /** Receipt entries were committed: sign and send them soon. */
  receiptsPending(): void;
  problem(err: unknown): void;
  readonly fault: FaultHook | undefined;
}

const PAIRWISE_KINDS = new Set([0x11, 0x12]);

/** What opening one envelope gave. */
type Opened =
  | { kind: 'message'; record: InboxRecord; flags: ReceiptFlag[]; number: number | undefined; sentAt: number; eventSha256: string | undefined; evidence: Record<string, unknown> }
  | { kind: 'flag'; flag: Flag; heal: boolean; reason: FlagCode; noReceipt: boolean }
  | { kind: 'handled'; flags: ReceiptFlag[]; number: number | undefined; sentAt: number; eventSha256: string | undefined; evidence: Record<string, unknown> }
  | { kind: 'receipt'; infos: ReceiptInfo[] };

/**
 * An error that a peer's (or the relay's) bytes can make a parser throw: the envelope is
 * rejected and flagged. Store failures and the like are not: they fail the batch, which
 * is delivered again.
 */
function isInputError(err: unknown): boolean {
  return err instanceof EvidenceError || err instanceof CryptoError || err instanceof RangeError || err instanceof SyntaxError || err instanceof TypeError;
}

/** Fingerprints of the listed devices' keys (the directory hands out the same arrays). */
const fingerprints = new WeakMap<Uint8Array, string>();
function fingerprintOf(key: Uint8Array, backend: CryptoBackend): string {
  let f = fingerprints.get(key);
  if (f === undefined) {
    f = keyFingerprint(key, backend);
    fingerprints.set(key, f);
  }
  return f;
}

const RECEIPT_FLAG_SET = new Set<string>(RECEIPT_FLAGS);
function isReceiptFlag(code: string): code is ReceiptFlag {
  return RECEIPT_FLAG_SET.has(code);
}

/** What each anomaly means, for the flag's `detail`. */
const ANOMALY_DETAIL: Partial<Record<FlagCode, string>> = {
  DUPLICATE: 'delivered again at another mailbox sequence, or at a sequence used before',
  REPLAY: 'a message number of this conversation that came before',
  REORDERED: 'it filled a hole: it came after later ones',
  LATE: 'delivered later than the policy allows after it was sent',
  CLOCK_SKEW: "the sender's clock is ahead of ours beyond the tolerance",
  EXPIRED: 'delivered after its expiry',
  IDENTITY_CHANGED: "the sender device's identity key is not the one it had in this conversation",
  GAP: 'a hole in a signed event chain',
  EVENT_ID_REUSED: 'a signed event reused an idempotency key (source, id) with different content',
  EVENT_CHAIN_BROKEN: "a signed event whose previous hash is not the hash of the event before it",
};

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
    let entries = 0;
    const verified: ReceiptInfo[] = [];
    const stored = await this.c.db.run(async (tx) => {
      const out: Array<{ key: string; record: InboxRecord }> = [];
      for (const item of batch) {
        const f = item.frame;
        if (item.expired) {
          const { from, to } = item.expired;
          await this.c.anomalies.mailboxExpired(tx, from, to, this.c.now());
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
          tx.put(NS.seen, seenKey, encodeRecord({ at: this.c.now(), seq: item.seq }));
          await this.c.anomalies.mailboxSeq(tx, item.seq, this.c.now());
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
        const now = this.c.now();
        const seenKey = `${f.senderUserId} ${f.senderDeviceId} ${encodeBase64url(f.envelopeId)}`;
        const seenRaw = await tx.get(NS.seen, seenKey);
        if (seenRaw !== undefined) {
          // The same envelope at the same sequence: delivered again after a lost
          // acknowledgement (at least once). At another sequence: the relay stored or
          // delivered it twice.
          const first = decodeRecord<{ at: number; seq?: number }>(seenRaw).seq;
          if (first === undefined || first === f.seq) continue;
          await this.c.anomalies.mailboxSeq(tx, f.seq, now);
          const entry = this.#entry(f, now, { disposition: 'rejected', reason: 'DUPLICATE', flags: ['DUPLICATE'] });
          this.#raise(tx, f, ['DUPLICATE'], now, { firstSeq: first });
          if (lists.get(f.senderUserId)?.device(f.senderDeviceId)) {
            this.c.receipts.addPending(tx, entry);
            entries++;
          }
          continue;
        }
        tx.put(NS.seen, seenKey, encodeRecord({ at: now, seq: f.seq }));
        const mailboxFlags = await this.c.anomalies.mailboxSeq(tx, f.seq, now);
        const r = await this.#open(tx, f, lists.get(f.senderUserId), now);
        this.c.fault?.('decrypted', f.seq);
        const flags: ReceiptFlag[] = [...mailboxFlags, ...(r.kind === 'message' || r.kind === 'handled' ? r.flags : [])];
        if (r.kind === 'message') {
          // The mailbox and the conversation can both see the same anomaly (a late envelope
          // fills a hole in each): one flag each.
          const record: InboxRecord = { ...r.record, flags: [...new Set(flags)] };
          const key = inboxKey(f.seq, f.envelopeId);
          tx.put(NS.inbox, key, encodeRecord(record));
          out.push({ key, record });
        } else if (r.kind === 'flag') {
          this.c.flags.add(tx, r.flag);
          if (r.heal) heal.push({ userId: f.senderUserId, deviceId: f.senderDeviceId, envelopeId: f.envelopeId });
        } else if (r.kind === 'receipt') {
          verified.push(...r.infos);
        }
        this.#raise(tx, f, r.kind === 'flag' ? mailboxFlags : flags, now, r.kind === 'message' || r.kind === 'handled' ? r.evidence : {});
        // A receipt for everything processed but receipts, and not for devices that are
        // not in their user's verified list (there is nobody to send it to).
        if (r.kind === 'receipt' || (r.kind === 'flag' && r.noReceipt)) continue;
        const entry =
          r.kind === 'flag'
            ? this.#entry(f, now, { disposition: 'rejected', reason: r.reason, flags: [...mailboxFlags, ...(isReceiptFlag(r.reason) ? [r.reason] : [])] })
            : this.#entry(f, now, { disposition: 'processed', flags, number: r.number, sentAt: r.sentAt, eventSha256: r.eventSha256 });
        this.c.receipts.addPending(tx, entry);
        entries++;
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
    if (verified.length > 0) this.c.receiptsVerified(verified);
    if (entries > 0) this.c.receiptsPending();
    for (const h of heal) this.c.heal(h.userId, h.deviceId, h.envelopeId);
    if (initial) this.c.prekeysUsed();
  }

  /** A receipt entry for a delivered envelope. */
  #entry(
    f: DeliverFrame,
    now: number,
    o: { disposition: 'processed' | 'rejected'; reason?: string | undefined; flags: readonly ReceiptFlag[]; number?: number | undefined; sentAt?: number | undefined; eventSha256?: string | undefined },
  ): ReceiptEntry {
    return {
      envelopeId: encodeBase64url(f.envelopeId),
      sha256: encodeBase64url(this.c.receipts.sha256(f.payload)),
      seq: f.seq,
      sender: { user: f.senderUserId, device: f.senderDeviceId },
      ...(o.number === undefined ? {} : { messageNumber: o.number }),
      ...(o.eventSha256 === undefined ? {} : { eventSha256: o.eventSha256 }),
      ...(o.sentAt === undefined ? {} : { sentAt: o.sentAt }),
      storedAt: f.storedAtMs,
      receivedAt: now,
      disposition: o.disposition,
      ...(o.reason === undefined ? {} : { reason: o.reason }),
      flags: [...new Set(o.flags)],
    };
  }

  /** Raises each anomaly flag to the application, with its evidence. */
  #raise(tx: StoreTx, f: DeliverFrame, flags: readonly FlagCode[], now: number, extra: Record<string, unknown>): void {
    for (const code of new Set(flags)) {
      this.c.flags.add(tx, {
        code,
        userId: f.senderUserId,
        deviceId: f.senderDeviceId,
        envelopeId: encodeBase64url(f.envelopeId),
        seq: f.seq,
        at: now,
        detail: ANOMALY_DETAIL[code] ?? code,
        evidence: { storedAt: f.storedAtMs, expiresAt: f.expiresAtMs, receivedAt: now, ...extra },
      });
    }
  }

  async #open(tx: StoreTx, f: DeliverFrame, list: Awaited<ReturnType<Directory['devices']>> | undefined, now: number): Promise<Opened> {
    const rejected = (code: FlagCode, detail: string, heal: boolean, evidence: Record<string, unknown> = {}, noReceipt = false): Opened => ({
      kind: 'flag',
      flag: flag(code, detail, evidence),
      heal,
      reason: code,
      noReceipt,
    });
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
      return rejected('UNKNOWN_SENDER', `device ${f.senderDeviceId} is not in the verified list of ${f.senderUserId}`, false, {}, true);
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
        return rejected('MALFORMED_ENVELOPE', `unknown envelope kind ${kind ?? 'none'}`, false);
      }
    } catch (err) {
      if (err instanceof SdkError && err.code === 'STORE_CORRUPT') {
        // Our stored state for this sender does not read: the envelope is lost to us, and
        // the sender is asked for a new session, as for any broken session.
        return rejected('DECRYPT_FAILED', `the stored session state does not read: ${err.message}`, kind !== GROUP_MESSAGE_KIND, { error: err.code });
      }
      if (!(err instanceof CryptoError)) throw err;
      const malformed = err.code === 'INVALID_MESSAGE' || err.code === 'UNSUPPORTED_VERSION';
      if (malformed) return rejected('MALFORMED_ENVELOPE', err.message, false, { error: err.code });
      // A replay is the relay's doing, not a broken session: flag it, don't heal.
      if (err.code === 'REPLAYED_MESSAGE') return rejected('REPLAY', `a message key already used: ${err.message}`, false, { error: err.code });
      return rejected('DECRYPT_FAILED', err.message, kind !== GROUP_MESSAGE_KIND, { error: err.code });
    }
    let payload;
    try {
      payload = decodePayload(unpad(padded));
    } catch (err) {
      if (!(err instanceof CryptoError)) throw err;
      return rejected('MALFORMED_ENVELOPE', `decrypted, but not a valid payload: ${err.message}`, false, { error: err.code });
    }
    const senderKey = fingerprintOf(device.identityKey, this.c.backend);
    switch (payload.type) {
      case 'message':
        if (groupId !== undefined && payload.groupId !== groupId) {
          return rejected('MALFORMED_ENVELOPE', 'a group message whose payload names another group', false);
        }
        if (groupId === undefined && payload.groupId !== undefined) {
          return rejected('MALFORMED_ENVELOPE', 'a group message that did not come under its sender key', false);
        }
        // Another user's message is for us; only our own devices send us copies of what
        // they sent to someone else.
        if (payload.to !== undefined && payload.to !== this.c.userId && f.senderUserId !== this.c.userId) {
          return rejected('MALFORMED_ENVELOPE', `a message addressed to ${payload.to}, not to this user`, false);
        }
        const flags: ReceiptFlag[] = await this.c.anomalies.message(tx, {
          senderUserId: f.senderUserId,
          senderDeviceId: f.senderDeviceId,
          conversation: payload.groupId !== undefined ? `g:${payload.groupId}` : `u:${payload.to ?? ''}`,
          group: payload.groupId !== undefined,
          number: payload.number,
          seq: f.seq,
          senderKey,
          sentAt: payload.sentAt,
          storedAt: f.storedAtMs,
          expiresAt: f.expiresAtMs,
          connectedAt: this.c.connectedAt(),
          now,
        });
        const evidence: Record<string, unknown> = { sentAt: payload.sentAt, ...(payload.number === undefined ? {} : { number: payload.number }) };
        let eventSha256: string | undefined;
        if (payload.kind === 'event') {
          const conversation = payload.groupId !== undefined ? `g:${payload.groupId}` : `u:${payload.to ?? ''}`;
          let ev;
          try {
            ev = await this.c.events.receive(tx, new TextDecoder().decode(payload.body), { userId: f.senderUserId, deviceId: f.senderDeviceId }, conversation, IdentityKey.fromBytes(device.identityKey, this.c.backend), now);
          } catch (err) {
            // Whatever a peer's bytes make a parser throw rejects this envelope; it never halts the inbox.
            if (!isInputError(err)) throw err;
            return rejected('BAD_SIGNATURE', `a signed event that cannot be read: ${(err as Error).message}`, false, { error: (err as { code?: string }).code ?? (err as Error).name });
          }
          if (!ev.ok) return rejected('BAD_SIGNATURE', ev.detail, false, { error: ev.error });
          eventSha256 = ev.hash;
          flags.push(...(ev.flags as ReceiptFlag[]));
          Object.assign(evidence, ev.evidence);
          // The same event again (its idempotency key): processed, not offered twice.
          if (ev.duplicate) return { kind: 'handled', flags, number: payload.number, sentAt: payload.sentAt, eventSha256, evidence };
        }
        return {
          kind: 'message',
          flags,
          number: payload.number,
          sentAt: payload.sentAt,
          eventSha256,
          evidence,
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
            receivedAt: now,
            flags: [],
            number: payload.number,
          },
        };
      case 'distribution':
        if (groupId !== undefined) return rejected('MALFORMED_ENVELOPE', 'a sender key must come over a pairwise session', false);
        try {
          await this.c.groups.receiveDistribution(tx, from, payload.groupId, payload.distribution);
        } catch (err) {
          if (!(err instanceof CryptoError)) throw err;
          return rejected('MALFORMED_ENVELOPE', `a sender key that cannot be used: ${err.message}`, false, { error: err.code });
        }
        return { kind: 'handled', flags: [], number: undefined, sentAt: payload.sentAt, eventSha256: undefined, evidence: {} };
      case 'topic-key': {
        if (groupId !== undefined) return rejected('MALFORMED_ENVELOPE', 'a topic key must come over a pairwise session', false);
        let stored;
        try {
          stored = await this.c.topicKeys.receive(tx, from, payload.distribution, now);
        } catch (err) {
          if (!(err instanceof CryptoError)) throw err;
          return rejected('MALFORMED_ENVELOPE', `a topic key that cannot be used: ${err.message}`, false, { error: err.code });
        }
        this.c.topicKeyStored(from, stored.keyId);
        return { kind: 'handled', flags: [], number: undefined, sentAt: payload.sentAt, eventSha256: undefined, evidence: {} };
      }
      case 'reset':
        // The session the sender just started with us is current now (sessions.open made
        // it so): nothing else to do.
        return { kind: 'handled', flags: [], number: undefined, sentAt: payload.sentAt, eventSha256: undefined, evidence: {} };
      case 'receipt': {
        if (groupId !== undefined) return rejected('MALFORMED_ENVELOPE', 'a receipt must come over a pairwise session', false);
        try {
          const infos = await this.c.receipts.received(tx, payload.jws, from, IdentityKey.fromBytes(device.identityKey, this.c.backend), now);
          return { kind: 'receipt', infos };
        } catch (err) {
          if (!isInputError(err)) throw err;
          // No receipt is ever sent for a receipt (that could go back and forth).
          const code = err instanceof EvidenceError ? err.code : (err as Error).name;
          return rejected(code === 'BAD_SIGNATURE' ? 'BAD_SIGNATURE' : 'MALFORMED_ENVELOPE', `a receipt that does not verify: ${(err as Error).message}`, false, { error: code }, true);
        }
      }
    }
  }

  /** Drops remembered envelope ids (and event keys, kept receipts) older than DEDUPE_RETENTION_MS, and the oldest beyond MAX_DEDUPE_ENTRIES. */
  async prune(): Promise<void> {
    await this.c.db.run(async (tx) => {
      const rows = (await tx.list(NS.seen)).map(([k, v]) => ({ k, at: decodeRecord<{ at: number }>(v).at })).sort((a, b) => a.at - b.at);
      const cutoff = this.c.now() - DEDUPE_RETENTION_MS;
      const excess = rows.length - MAX_DEDUPE_ENTRIES;
      rows.forEach((r, i) => {
        if (r.at < cutoff || i < excess) tx.delete(NS.seen, r.k);
      });
      // Signed events' idempotency keys and the receipts kept for what we sent: the same retention.
      await this.c.events.prune(tx, cutoff, MAX_DEDUPE_ENTRIES);
      await this.c.receipts.prune(tx, cutoff);
    });
  }
}

