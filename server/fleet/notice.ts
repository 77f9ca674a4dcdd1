/**
 * Mailbox notices: the wake-ups relays sharing a database send each other (over
 * PostgreSQL NOTIFY or a NATS bus, server/fleet/notifier.ts), as JSON text.
 *
 * - `tails`: a commit's mailboxes and their new tails (the sending relay's own devices
 *   are woken directly; every other relay pushes to the devices connected to it);
 * - `all`: a commit touched too many mailboxes for one notice; every other relay runs a
 *   catch-up scan;
 * - `connected`: a device connected (authenticated) at `at`; an older connection of it
 *   on another relay is closed, so a device has one live connection fleet-wide;
 * - `revoked`: a device left its user's list; every relay, the sender included, closes
 *   its connection (sent with node '', by no relay in particular);
 * - `topic`: a commit to a topic, up to (not including) offset `head` of `epoch`, or a
 *   reset to `epoch`; every other relay with subscribers of the topic reads it.
 *
 * What arrives is input from the network (or from anyone who can NOTIFY on the
 * database): it is bounded (NOTICE_MAX_BYTES, NOTICE_MAX_TAILS) and checked field by
 * field, and anything else is dropped, never thrown.
 */
import { DEVICE_ID_PATTERN, MAX_TOPIC_NAME_LENGTH, MAX_USER_ID_LENGTH, TOPIC_NAME_PATTERN, USER_ID_PATTERN } from '../../protocol/limits.js';

/** The PostgreSQL channel of mailbox notices (the store function notifies on it too). */
export const MAILBOX_CHANNEL = 'hermetic_mailbox';

/** Largest notice accepted, in bytes: PostgreSQL refuses a NOTIFY payload of 8000 bytes
 * or more, and a NATS bus is held to the same bound. */
export const NOTICE_MAX_BYTES = 7999;
/** Largest tails notice the relay writes (as the store function does, migrations/0004):
 * a commit announcing more is split into several (or, in SQL, sent as "all"). */
export const NOTICE_TAILS_MAX_BYTES = 7900;
/** Most mailboxes one tails notice may name (the byte bound allows about 660). */
export const NOTICE_MAX_TAILS = 1000;
/** Longest relay node id in a notice (relays use 16 hex digits). */
export const NOTICE_MAX_NODE_LENGTH = 64;

export type MailboxNotice =
  | { readonly node: string; readonly kind: 'tails'; readonly tails: ReadonlyArray<readonly [string, string, number]> }
  | { readonly node: string; readonly kind: 'all' }
  | { readonly node: string; readonly kind: 'connected'; readonly userId: string; readonly deviceId: string; readonly at: number }
  /** A device was revoked: every relay closes its connection (sent with node ''). */
  | { readonly node: string; readonly kind: 'revoked'; readonly userId: string; readonly deviceId: string }
  | { readonly node: string; readonly kind: 'topic'; readonly topic: string; readonly epoch: number; readonly head: number };

export type NoticeKind = MailboxNotice['kind'];
export const NOTICE_KINDS: readonly NoticeKind[] = ['tails', 'all', 'connected', 'revoked', 'topic'];

export function encodeNotice(n: MailboxNotice): string {
  switch (n.kind) {
    case 'tails':
      return JSON.stringify({ node: n.node, kind: n.kind, tails: n.tails });
    case 'all':
      return JSON.stringify({ node: n.node, kind: n.kind });
    case 'connected':
      return JSON.stringify({ node: n.node, kind: n.kind, userId: n.userId, deviceId: n.deviceId, at: n.at });
    case 'revoked':
      return JSON.stringify({ node: n.node, kind: n.kind, userId: n.userId, deviceId: n.deviceId });
    case 'topic':
      return JSON.stringify({ node: n.node, kind: n.kind, topic: n.topic, epoch: n.epoch, head: n.head });
  }
}

export function connectedNotice(node: string, userId: string, deviceId: string, at: number): MailboxNotice {
  return { node, kind: 'connected', userId, deviceId, at };
}

export function revokedNotice(userId: string, deviceId: string): MailboxNotice {
  return { node: '', kind: 'revoked', userId, deviceId };
}

/**
 * The tails notices for one commit, as the store function writes them (migrations/0004)
 * for a bus that cannot be sent to from inside the transaction: each mailbox's highest
 * committed sequence, split over as many notices as keep each within
 * NOTICE_TAILS_MAX_BYTES and NOTICE_MAX_TAILS.
 */
export function tailsNotices(node: string, committed: Iterable<{ readonly userId: string; readonly deviceId: string; readonly seq: number }>): MailboxNotice[] {
  const tails = new Map<string, [string, string, number]>();
  for (const e of committed) {
    const k = `${e.userId}\u0000${e.deviceId}`;
    const t = tails.get(k);
    if (!t) tails.set(k, [e.userId, e.deviceId, e.seq]);
    else if (t[2] < e.seq) t[2] = e.seq;
  }
  const empty = encodeNotice({ node, kind: 'tails', tails: [] }).length;
  const out: MailboxNotice[] = [];
  let chunk: Array<[string, string, number]> = [];
  let size = empty;
  for (const t of tails.values()) {
    // One entry and its comma; ids are ASCII (checked where they enter), so length is bytes.
    const add = JSON.stringify(t).length + 1;
    if (chunk.length > 0 && (size + add > NOTICE_TAILS_MAX_BYTES || chunk.length >= NOTICE_MAX_TAILS)) {
      out.push({ node, kind: 'tails', tails: chunk });
      chunk = [];
      size = empty;
    }
    chunk.push(t);
    size += add;
  }
  if (chunk.length > 0) out.push({ node, kind: 'tails', tails: chunk });
  return out;
}

/** Sequences and times in notices: JSON numbers can be fractions, negative or beyond 2^53 (1e400 parses as Infinity). */
const isSafeNat = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isUserId = (v: unknown): v is string => typeof v === 'string' && v.length <= MAX_USER_ID_LENGTH && USER_ID_PATTERN.test(v);
const isDeviceId = (v: unknown): v is string => typeof v === 'string' && DEVICE_ID_PATTERN.test(v);
const isTopic = (v: unknown): v is string => typeof v === 'string' && v.length <= MAX_TOPIC_NAME_LENGTH && TOPIC_NAME_PATTERN.test(v);

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Reads a notice (text from NOTIFY, bytes from NATS); undefined for anything that is not
 * one: too large, not JSON, an unknown kind, or a field of the wrong type or form. In a
 * tails notice, entries that are not [user, device, sequence] are dropped (the rest are
 * still announced); more than NOTICE_MAX_TAILS entries drop the notice.
 */
export function decodeNotice(payload: string | Uint8Array): MailboxNotice | undefined {
  try {
    let text: string;
    if (typeof payload === 'string') {
      if (payload.length > NOTICE_MAX_BYTES || Buffer.byteLength(payload) > NOTICE_MAX_BYTES) return undefined;
      text = payload;
    } else {
      if (payload.length > NOTICE_MAX_BYTES) return undefined;
      text = utf8.decode(payload);
    }
    const v = JSON.parse(text) as {
      node?: unknown;
      kind?: unknown;
      tails?: unknown;
      userId?: unknown;
      deviceId?: unknown;
      at?: unknown;
      topic?: unknown;
      epoch?: unknown;
      head?: unknown;
    } | null;
    if (typeof v !== 'object' || v === null || typeof v.node !== 'string' || v.node.length > NOTICE_MAX_NODE_LENGTH) return undefined;
    if (v.kind === 'all') return { node: v.node, kind: 'all' };
    if (v.kind === 'revoked' && isUserId(v.userId) && isDeviceId(v.deviceId)) {
      return { node: v.node, kind: 'revoked', userId: v.userId, deviceId: v.deviceId };
    }
    if (v.kind === 'connected' && isUserId(v.userId) && isDeviceId(v.deviceId) && isSafeNat(v.at)) {
      return { node: v.node, kind: 'connected', userId: v.userId, deviceId: v.deviceId, at: v.at };
    }
    if (v.kind === 'topic' && isTopic(v.topic) && isSafeNat(v.epoch) && v.epoch >= 1 && isSafeNat(v.head) && v.head >= 1) {
      return { node: v.node, kind: 'topic', topic: v.topic, epoch: v.epoch, head: v.head };
    }
    if (v.kind === 'tails' && Array.isArray(v.tails) && v.tails.length <= NOTICE_MAX_TAILS) {
      const tails = v.tails.filter(
        (t): t is [string, string, number] => Array.isArray(t) && t.length === 3 && isUserId(t[0]) && isDeviceId(t[1]) && isSafeNat(t[2]),
      );
      return { node: v.node, kind: 'tails', tails };
    }
  } catch {
    /* not ours */
  }
  return undefined;
}
