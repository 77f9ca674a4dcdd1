/**
 * The receipt log's SQL (migrations/0010): leaves, their parties, the complete Merkle
 * nodes, the tree head and the checkpoint history. Appends run in one transaction per
 * batch under the row lock on `log_tree`, which serializes them across every relay on
 * the database; reads need no lock, since complete nodes and leaves never change.
 */
import { equalBytes } from '../../crypto/primitives/bytes.js';
import type { NodeId, NodeReader } from '../../crypto/tlog/merkle.js';
import type { Database, SqlExecutor } from '../storage/database.js';

export interface TreeHead {
  readonly size: number;
  readonly root: Uint8Array;
}

/** One receipt to append, already verified. */
export interface LeafInput {
  readonly leafHash: Uint8Array;
  readonly receipt: string;
  readonly recipientUser: string;
  readonly recipientDevice: string;
  /** The users the receipt concerns: its recipient user and every sender user, distinct. */
  readonly parties: readonly string[];
}

export interface AppendedLeaf {
  readonly index: number;
  /** The leaf was already in the log. */
  readonly duplicate: boolean;
}

/** One receipt entry as a stored envelope must confirm it. */
export interface DeliveryClaim {
  readonly senderUser: string;
  readonly senderDevice: string;
  readonly envelopeId: Uint8Array;
  readonly recipientUser: string;
  readonly recipientDevice: string;
  readonly seq: number;
}

export interface StoredCheckpoint {
  readonly size: number;
  readonly root: Uint8Array;
  readonly note: string;
  readonly signedAtMs: number;
}

export interface StoredLeaf {
  readonly index: number;
  readonly leafHash: Uint8Array;
  readonly receipt: string;
  readonly submittedAtMs: number;
}

/** Computes the nodes an append creates (crypto/tlog appendLeaves, bound to a backend). */
export interface TreeMath {
  /** The nodes an append creates and the new head (crypto/tlog appendLeaves). */
  append(
    size: number,
    leafHashes: readonly Uint8Array[],
    read: NodeReader,
  ): Promise<{ nodes: ReadonlyArray<{ level: number; index: number; hash: Uint8Array }>; size: number; root: Uint8Array }>;
  /** The root of the first `size` leaves from the stored nodes (crypto/tlog treeHash). */
  root(size: number, read: NodeReader): Promise<Uint8Array>;
}

type Row = Record<string, unknown>;

const bytes = (v: unknown): Uint8Array => new Uint8Array(v as Uint8Array);

function checkpointRow(r: Row): StoredCheckpoint {
  return { size: Number(r.size), root: bytes(r.root), note: String(r.note), signedAtMs: Number(r.signed_at_ms) };
}

function leafRow(r: Row): StoredLeaf {
  return { index: Number(r.leaf_index), leafHash: bytes(r.leaf_hash), receipt: String(r.receipt), submittedAtMs: Number(r.submitted_at_ms) };
}

export class LogStore {
  constructor(private readonly db: Database) {}

  /** A batched node reader on `q` (the database, or an append's transaction). */
  reader(q: SqlExecutor = this.db): NodeReader {
    return async (ids: readonly NodeId[]) => {
      if (ids.length === 0) return [];
      const rows = await q.query<{ hash: Uint8Array | null }>(
        `SELECT n.hash FROM unnest($1::int[], $2::bigint[]) WITH ORDINALITY AS q(level, idx, ord)
           LEFT JOIN log_nodes n ON n.level = q.level AND n.idx = q.idx ORDER BY q.ord`,
        [ids.map((i) => i.level), ids.map((i) => i.index)],
      );
      return rows.map((r, k) => {
        if (r.hash === null) throw new Error(`log node ${ids[k]?.level}/${ids[k]?.index} is missing`);
        return bytes(r.hash);
      });
    };
  }

  async treeHead(q: SqlExecutor = this.db): Promise<TreeHead> {
    const rows = await q.query<Row>('SELECT size, root FROM log_tree');
    const r = rows[0];
    if (!r) throw new Error('the log tree head row is missing');
    return { size: Number(r.size), root: bytes(r.root) };
  }

  /** The registered identity keys of these devices (absent: not an active device). */
  async identityKeys(devices: ReadonlyArray<{ user: string; device: string }>): Promise<Map<string, Uint8Array>> {
    const rows = await this.db.query<Row>(
      `SELECT d.user_id, d.device_id, d.identity_key FROM unnest($1::text[], $2::text[]) AS q(u, d)
         JOIN devices d ON d.user_id = q.u AND d.device_id = q.d`,
      [devices.map((d) => d.user), devices.map((d) => d.device)],
    );
    return new Map(rows.map((r) => [deviceKey(String(r.user_id), String(r.device_id)), bytes(r.identity_key)]));
  }

  /**
   * The positions (0-based) of the claims no stored envelope confirms: none in the
   * recipient device's mailbox at that sequence, from that sender device with that
   * envelope id. (The relay keeps an envelope while it is unacknowledged and until its
   * partition is retired after that: migrations/0011.)
   */
  async unconfirmedDeliveries(claims: readonly DeliveryClaim[]): Promise<number[]> {
    if (claims.length === 0) return [];
    const rows = await this.db.query<Row>(
      `SELECT q.ord - 1 AS pos
         FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::text[], $6::bigint[])
              WITH ORDINALITY AS q(su, sd, eid, ru, rd, seq, ord)
        WHERE NOT EXISTS (
          SELECT 1 FROM envelopes e
           WHERE e.user_id = q.ru AND e.device_id = q.rd AND e.seq = q.seq
             AND e.sender_user = q.su AND e.sender_device = q.sd AND e.envelope_id = q.eid)
        ORDER BY q.ord`,
      [
        claims.map((c) => c.senderUser),
        claims.map((c) => c.senderDevice),
        claims.map((c) => c.envelopeId),
        claims.map((c) => c.recipientUser),
        claims.map((c) => c.recipientDevice),
        claims.map((c) => c.seq),
      ],
    );
    return rows.map((r) => Number(r.pos));
  }

  /**
   * Appends the leaves not yet in the log, in order, in one transaction holding the tree
   * head's row lock: stores the leaves, their parties and every node the append
   * completes, and moves the head. A leaf already present (by hash, from an earlier
   * batch or earlier in this one) keeps its index. Returns one answer per input and the
   * new head.
   */
  async append(items: readonly LeafInput[], nowMs: number, math: TreeMath): Promise<{ results: AppendedLeaf[]; head: TreeHead }> {
    return this.db.transaction(async (tx) => {
      const lock = await tx.query<Row>('SELECT size, root FROM log_tree FOR UPDATE');
      const head = lock[0];
      if (!head) throw new Error('the log tree head row is missing');
      const size = Number(head.size);
      const hex = items.map((i) => Buffer.from(i.leafHash).toString('hex'));
      const existing = new Map<string, number>();
      const found = await tx.query<Row>('SELECT leaf_index, leaf_hash FROM log_leaves WHERE leaf_hash = ANY($1::bytea[])', [items.map((i) => i.leafHash)]);
      for (const r of found) existing.set(Buffer.from(bytes(r.leaf_hash)).toString('hex'), Number(r.leaf_index));
      const fresh: LeafInput[] = [];
      const results = items.map((item, k) => {
        const h = hex[k] as string;
        const prior = existing.get(h);
        // Already logged, or placed earlier in this batch by another submission.
        if (prior !== undefined) return { index: prior, duplicate: true };
        const index = size + fresh.length;
        existing.set(h, index);
        fresh.push(item);
        return { index, duplicate: false };
      });
      if (fresh.length === 0) return { results, head: { size, root: bytes(head.root) } };
      const read = this.reader(tx);
      // Never extend a tree whose stored nodes disagree with its signed head: a damaged
      // or tampered table would otherwise be committed to by every later checkpoint.
      if (!equalBytes(await math.root(size, read), bytes(head.root))) throw new Error('the stored log nodes do not give the tree head root');
      const appended = await math.append(
        size,
        fresh.map((f) => f.leafHash),
        read,
      );
      const indices = fresh.map((_, k) => size + k);
      await tx.query(
        `INSERT INTO log_leaves (leaf_index, leaf_hash, receipt, submitted_at_ms, recipient_user, recipient_device)
         SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::text[], $4::bigint[], $5::text[], $6::text[])`,
        [indices, fresh.map((f) => f.leafHash), fresh.map((f) => f.receipt), fresh.map(() => nowMs), fresh.map((f) => f.recipientUser), fresh.map((f) => f.recipientDevice)],
      );
      const partyUsers: string[] = [];
      const partyLeaves: number[] = [];
      fresh.forEach((f, k) => {
        for (const u of f.parties) {
          partyUsers.push(u);
          partyLeaves.push(size + k);
        }
      });
      await tx.query('INSERT INTO log_parties (user_id, leaf_index) SELECT * FROM unnest($1::text[], $2::bigint[])', [partyUsers, partyLeaves]);
      await tx.query('INSERT INTO log_nodes (level, idx, hash) SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::bytea[])', [
        appended.nodes.map((n) => n.level),
        appended.nodes.map((n) => n.index),
        appended.nodes.map((n) => n.hash),
      ]);
      await tx.query('UPDATE log_tree SET size = $1, root = $2', [appended.size, appended.root]);
      return { results, head: { size: appended.size, root: appended.root } };
    });
  }

  /** The newest checkpoint signed by the key `verifierKey`, if any. */
  async latestCheckpoint(verifierKey: string): Promise<StoredCheckpoint | undefined> {
    const rows = await this.db.query<Row>('SELECT size, root, note, signed_at_ms FROM log_checkpoints WHERE verifier_key = $1 ORDER BY size DESC LIMIT 1', [verifierKey]);
    return rows[0] ? checkpointRow(rows[0]) : undefined;
  }

  /** Keeps a checkpoint signed by `verifierKey`; one of that size and key already kept
   * (by another relay) wins. */
  async saveCheckpoint(verifierKey: string, c: StoredCheckpoint): Promise<StoredCheckpoint> {
    await this.db.query(
      'INSERT INTO log_checkpoints (size, verifier_key, root, note, signed_at_ms) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (size, verifier_key) DO NOTHING',
      [c.size, verifierKey, c.root, c.note, c.signedAtMs],
    );
    const rows = await this.db.query<Row>('SELECT size, root, note, signed_at_ms FROM log_checkpoints WHERE size = $1 AND verifier_key = $2', [c.size, verifierKey]);
    if (!rows[0]) throw new Error('checkpoint not kept');
    return checkpointRow(rows[0]);
  }

  /** Checkpoints of size >= `from` by any key the log has had, oldest first. */
  async checkpoints(from: number, limit: number): Promise<StoredCheckpoint[]> {
    const rows = await this.db.query<Row>('SELECT size, root, note, signed_at_ms FROM log_checkpoints WHERE size >= $1 ORDER BY size, signed_at_ms LIMIT $2', [
      from,
      limit,
    ]);
    return rows.map(checkpointRow);
  }

  /** Stored nodes of `level`, indices [first, first + count), in order. */
  async nodesAt(level: number, first: number, count: number): Promise<Uint8Array[]> {
    const rows = await this.db.query<Row>('SELECT hash FROM log_nodes WHERE level = $1 AND idx >= $2 AND idx < $3 ORDER BY idx', [level, first, first + count]);
    return rows.map((r) => bytes(r.hash));
  }

  /** Leaves [first, first + count), in order. */
  async leaves(first: number, count: number): Promise<StoredLeaf[]> {
    const rows = await this.db.query<Row>(
      'SELECT leaf_index, leaf_hash, receipt, submitted_at_ms FROM log_leaves WHERE leaf_index >= $1 AND leaf_index < $2 ORDER BY leaf_index',
      [first, first + count],
    );
    return rows.map(leafRow);
  }

  /** Leaves from index `from` on that concern `userId`, in index order. */
  async leavesOf(userId: string, from: number, limit: number): Promise<StoredLeaf[]> {
    const rows = await this.db.query<Row>(
      `SELECT l.leaf_index, l.leaf_hash, l.receipt, l.submitted_at_ms
         FROM log_parties p JOIN log_leaves l ON l.leaf_index = p.leaf_index
        WHERE p.user_id = $1 AND p.leaf_index >= $2 ORDER BY p.leaf_index LIMIT $3`,
      [userId, from, limit],
    );
    return rows.map(leafRow);
  }
}

export function deviceKey(user: string, device: string): string {
  // Device ids never contain a space (DEVICE_ID_PATTERN), so this is unambiguous.
  return `${device} ${user}`;
}
