/**
 * The wire format between the relay and hermetic_store_sends (migrations/0004, 0009,
 * 0011): a batch of SENDs encoded as the function's parameters, and its answer rows
 * decoded into one typed answer per row.
 *
 * The parameters are built as a named object (StoreSendsParams); their order and SQL
 * types are declared once, in STORE_SENDS_PARAMS, from which both the statement and the
 * positional argument list are derived, so the layout contract lives in code.
 *
 * Parameters are cheap to send and to read: lists of ids as one space-separated string
 * (user and device ids never contain spaces), integers as array literals, envelope ids
 * and content hashes as fixed-width binary strings, payloads packed into one binary
 * string or, where the driver passes arrays of bytes cheaply, as an array.
 */
import { ENVELOPE_ID_BYTES } from '../../protocol/limits.js';
import type { SqlParam } from '../storage/database.js';
import { mailboxKey } from './key.js';

/** SHA-256: the SEND content hash the relay records for idempotency. */
export const CONTENT_HASH_BYTES = 32;

/** hermetic_store_sends' parameters, in order, with their SQL types. */
const STORE_SENDS_PARAMS = [
  ['nowMs', 'int8'],
  /** NOTIFY channel for the commit's notice; null: none (announced on another bus). */
  ['channel', 'text'],
  ['node', 'text'],
  ['maxBytes', 'int8'],
  ['maxEnvelopes', 'int8'],
  /** The batch's distinct recipient users (words). */
  ['recipients', 'text'],
  /** One element per distinct target mailbox: user, device (words), envelopes. */
  ['boxUsers', 'text'],
  ['boxDevices', 'text'],
  ['boxCounts', 'int4[]'],
  /** One element per target, SENDs in order and each SEND's targets in order. */
  ['targetUsers', 'text'],
  ['targetDevices', 'text'],
  /** The target's mailbox (1-based position in box*). */
  ['targetBoxes', 'int4[]'],
  /** The envelope's place among the batch's envelopes for its mailbox (0-based). */
  ['targetRanks', 'int4[]'],
  /** The position of its SEND's first target: the SEND's item number in the answer. */
  ['targetFirsts', 'int4[]'],
  ['senderUsers', 'text'],
  ['senderDevices', 'text'],
  /** ENVELOPE_ID_BYTES each. */
  ['envelopeIds', 'bytea'],
  ['expiresAtMs', 'int8[]'],
  /** CONTENT_HASH_BYTES each. */
  ['contentHashes', 'bytea'],
  /** On a SEND's first target: its target list as a text[] literal (others: ''). */
  ['targetLists', 'text'],
  /** On a SEND's first target: its number of targets (others: NULL). */
  ['targetCounts', 'int4[]'],
  /** On a SEND's first target: its recipient's position in `recipients` (others: NULL). */
  ['recipientIndexes', 'int4[]'],
  /** Payloads as an array, or packed into one string with 1-based offsets and lengths. */
  ['payloads', 'bytea[]'],
  ['payloadBlob', 'bytea'],
  ['payloadOffsets', 'int4[]'],
  ['payloadLengths', 'int4[]'],
] as const;

export type StoreSendsParams = { readonly [K in (typeof STORE_SENDS_PARAMS)[number][0]]: SqlParam };

export const STORE_SENDS_SQL = `SELECT * FROM hermetic_store_sends(${STORE_SENDS_PARAMS.map(([, type], i) => `$${i + 1}::${type}`).join(', ')})`;

export function storeSendsArgs(params: StoreSendsParams): SqlParam[] {
  return STORE_SENDS_PARAMS.map(([name]) => params[name]);
}

/** What the encoder needs of a SEND. */
export interface BatchSend {
  readonly senderUserId: string;
  readonly senderDeviceId: string;
  readonly envelopeId: Uint8Array;
  readonly contentHash: Uint8Array;
  readonly recipientUserId: string;
  readonly targets: ReadonlyArray<{ readonly deviceId: string; readonly payload: Uint8Array }>;
  readonly ttlSeconds: number;
}

/** One envelope of the batch: which SEND, which mailbox and its place there. */
export interface BatchTarget {
  readonly item: number;
  readonly deviceId: string;
  /** 0-based position of its mailbox among the batch's mailboxes. */
  readonly box: number;
  /** Its sequence is the mailbox's first new sequence plus this. */
  readonly rank: number;
  readonly payload: Uint8Array;
}

export interface EncodedBatch {
  /** Every parameter but the call's settings (time, channel, node, quota). */
  readonly params: Omit<StoreSendsParams, 'nowMs' | 'channel' | 'node' | 'maxBytes' | 'maxEnvelopes'>;
  readonly targets: readonly BatchTarget[];
  /** Each mailbox's mailboxKey, by its 0-based position. */
  readonly mailboxes: readonly string[];
  /** The SEND (index into the caller's items) of each item number the answer names. */
  readonly itemAt: ReadonlyMap<number, number>;
}


/**
 * Encodes the SENDs `items[i]` for each i of `indexes`, numbering each envelope within
 * its mailbox. `packPayloads`: payloads as one binary string (a server connection, where
 * an array of bytes would travel as hex text parsed while the batch holds the mailbox
 * locks) rather than an array (in process).
 */
export function encodeSendBatch(items: readonly BatchSend[], indexes: readonly number[], nowMs: number, packPayloads: boolean): EncodedBatch {
  const recipients = new Map<string, number>();
  const boxes = new Map<string, { index: number; count: number }>();
  const box = { users: [] as string[], devices: [] as string[], counts: [] as number[] };
  const t = {
    users: [] as string[], devices: [] as string[], boxes: [] as number[], ranks: [] as number[], firsts: [] as number[],
    senderUsers: [] as string[], senderDevices: [] as string[], envelopeIds: [] as Uint8Array[], expires: [] as number[],
    hashes: [] as Uint8Array[], lists: [] as string[], counts: [] as Array<number | null>, recipientIndexes: [] as Array<number | null>,
    payloads: [] as Uint8Array[],
  };
  const targets: BatchTarget[] = [];
  const itemAt = new Map<number, number>();
  for (const i of indexes) {
    const it = items[i]!;
    let ri = recipients.get(it.recipientUserId);
    if (ri === undefined) recipients.set(it.recipientUserId, (ri = recipients.size + 1));
    const first = t.users.length + 1;
    itemAt.set(first, i);
    it.targets.forEach((target, n) => {
      const k = mailboxKey(it.recipientUserId, target.deviceId);
      let b = boxes.get(k);
      if (!b) {
        boxes.set(k, (b = { index: boxes.size, count: 0 }));
        box.users.push(it.recipientUserId);
        box.devices.push(target.deviceId);
        box.counts.push(0);
      }
      const rank = b.count++;
      box.counts[b.index] = b.count;
      targets.push({ item: i, deviceId: target.deviceId, box: b.index, rank, payload: target.payload });
      t.users.push(it.recipientUserId);
      t.devices.push(target.deviceId);
      t.boxes.push(b.index + 1);
      t.ranks.push(rank);
      t.firsts.push(first);
      t.senderUsers.push(it.senderUserId);
      t.senderDevices.push(it.senderDeviceId);
      t.envelopeIds.push(it.envelopeId);
      t.expires.push(nowMs + it.ttlSeconds * 1000);
      t.hashes.push(it.contentHash);
      // Quoted: a device may be called "NULL". Device ids hold no quote or backslash.
      t.lists.push(n === 0 ? targetList(it.targets) : '');
      t.counts.push(n === 0 ? it.targets.length : null);
      t.recipientIndexes.push(n === 0 ? ri : null);
      t.payloads.push(target.payload);
    });
  }
  const packed = packPayloads ? packBytes(t.payloads) : undefined;
  return {
    params: {
      recipients: words([...recipients.keys()]),
      boxUsers: words(box.users),
      boxDevices: words(box.devices),
      boxCounts: ints(box.counts),
      targetUsers: words(t.users),
      targetDevices: words(t.devices),
      targetBoxes: ints(t.boxes),
      targetRanks: ints(t.ranks),
      targetFirsts: ints(t.firsts),
      senderUsers: words(t.senderUsers),
      senderDevices: words(t.senderDevices),
      envelopeIds: fixedWidth(t.envelopeIds, ENVELOPE_ID_BYTES),
      expiresAtMs: ints(t.expires),
      contentHashes: fixedWidth(t.hashes, CONTENT_HASH_BYTES),
      targetLists: t.lists.join(' '),
      targetCounts: ints(t.counts),
      recipientIndexes: ints(t.recipientIndexes),
      payloads: packed ? null : t.payloads,
      payloadBlob: packed ? packed.blob : null,
      payloadOffsets: packed ? ints(packed.offsets) : null,
      payloadLengths: packed ? ints(packed.lengths) : null,
    },
    targets,
    mailboxes: [...boxes.keys()],
    itemAt,
  };
}

/** A row of hermetic_store_sends' answer, as the driver returns it. */
export interface StoreRow {
  readonly r_kind: number;
  readonly r_item: number | null;
  readonly r_seq: string | number | null;
  readonly r_devices: string[] | null;
  readonly r_seqs: Array<string | number> | null;
  readonly r_expires: string | number | null;
}

/** The answer rows, one shape per kind (see migrations/0004 and 0009). */
export type StoreAnswer =
  /** Mailbox `box` (0-based, as encoded) received envelopes from `firstSeq` on. */
  | { readonly kind: 'stored'; readonly box: number; readonly firstSeq: number }
  /** The SEND at `item` was stored before with the same content: the original answer. */
  | { readonly kind: 'resend'; readonly item: number; readonly devices: readonly string[]; readonly seqs: readonly number[]; readonly expiresAtMs: number }
  /** The SEND at `item` reused an envelope id with different content (refused). */
  | { readonly kind: 'conflict'; readonly item: number }
  /** The SEND at `item` does not name its recipient's current `devices` (refused). */
  | { readonly kind: 'device-mismatch'; readonly item: number; readonly devices: readonly string[] }
  /** The SEND at `item` would overfill its recipient's mailboxes `devices` (refused). */
  | { readonly kind: 'mailbox-full'; readonly item: number; readonly devices: readonly string[] };

const KIND_STORED = 0;
const KIND_RESEND = 1;
const KIND_CONFLICT = 2;
const KIND_DEVICE_MISMATCH = 3;
const KIND_MAILBOX_FULL = 4;

export function decodeStoreRow(r: StoreRow): StoreAnswer {
  const item = Number(r.r_item);
  switch (r.r_kind) {
    case KIND_STORED:
      return { kind: 'stored', box: item - 1, firstSeq: Number(r.r_seq) };
    case KIND_RESEND:
      return { kind: 'resend', item, devices: r.r_devices ?? [], seqs: (r.r_seqs ?? []).map(Number), expiresAtMs: Number(r.r_expires) };
    case KIND_CONFLICT:
      return { kind: 'conflict', item };
    case KIND_DEVICE_MISMATCH:
      return { kind: 'device-mismatch', item, devices: r.r_devices ?? [] };
    case KIND_MAILBOX_FULL:
      return { kind: 'mailbox-full', item, devices: r.r_devices ?? [] };
    default:
      throw new Error(`unknown store answer kind ${r.r_kind}`);
  }
}

/** A SEND's target device ids as a text[] literal, each quoted. */
function targetList(targets: BatchSend['targets']): string {
  let s = '{';
  for (let i = 0; i < targets.length; i++) s += `${i === 0 ? '' : ','}"${targets[i]!.deviceId}"`;
  return `${s}}`;
}

/**
 * Ids as one space-separated string, split by string_to_array() in SQL: far cheaper to
 * encode and to parse than a text[] parameter. User ids are printable ASCII without
 * spaces and device ids are [A-Za-z0-9_-] (both checked where they enter), so a space
 * never occurs inside one; checked again here, as a wrong split would misfile data.
 */
function words(ids: readonly string[]): string {
  for (const id of ids) if (id.length === 0 || id.includes(' ')) throw new Error(`an id cannot be empty or contain a space: ${JSON.stringify(id)}`);
  return ids.join(' ');
}

/** An integer array literal (NULL for null); built in one pass, with no array of
 * strings in between (a third faster for a batch's hundreds of values). */
function ints(values: ReadonlyArray<number | null>): string {
  let s = '{';
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    s += (i === 0 ? '' : ',') + (v === null || v === undefined ? 'NULL' : v);
  }
  return `${s}}`;
}

/** Equal-length byte strings concatenated, read back in SQL with substring(). */
function fixedWidth(parts: readonly Uint8Array[], width: number): Buffer {
  for (const p of parts) if (p.length !== width) throw new Error(`expected ${width} bytes, got ${p.length}`);
  return Buffer.concat(parts, parts.length * width);
}

/** Concatenates byte strings, with 1-based offsets and lengths for SQL substring(). */
function packBytes(parts: readonly Uint8Array[]): { blob: Buffer; offsets: number[]; lengths: number[] } {
  const offsets: number[] = [];
  const lengths: number[] = [];
  let at = 1;
  for (const p of parts) {
    offsets.push(at);
    lengths.push(p.length);
    at += p.length;
  }
  return { blob: Buffer.concat(parts, at - 1), offsets, lengths };
}
