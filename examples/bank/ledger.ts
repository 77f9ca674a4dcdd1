/**
 * Bank B's ledger: an embedded PostgreSQL (PGlite) database. A payment event is applied in
 * one transaction that records its event id — the idempotency key — and moves the money,
 * so an event delivered twice (a worker that applied it and died before acknowledging)
 * is refused the second time, and the balances never count it twice.
 */
import { PGlite } from '@electric-sql/pglite';

export interface Payment {
  readonly eventId: string;
  readonly from: string;
  readonly to: string;
  readonly amountCents: number;
  /** The signed event, kept as evidence of who ordered the payment. */
  readonly jws: string;
}

export class Ledger {
  private constructor(private readonly db: PGlite) {}

  static async open(): Promise<Ledger> {
    const db = new PGlite();
    await db.exec(`
      CREATE TABLE payments (
        event_id text PRIMARY KEY,
        from_account text NOT NULL,
        to_account text NOT NULL,
        amount_cents bigint NOT NULL CHECK (amount_cents > 0),
        applied_by text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now(),
        jws text NOT NULL
      );
      CREATE TABLE balances (account text PRIMARY KEY, cents bigint NOT NULL);
    `);
    return new Ledger(db);
  }

  /** Applies a payment once: 'applied', or 'duplicate' when its event id is already in. */
  async apply(p: Payment, worker: string): Promise<'applied' | 'duplicate'> {
    return this.db.transaction(async (tx) => {
      const inserted = await tx.query(
        'INSERT INTO payments (event_id, from_account, to_account, amount_cents, applied_by, jws) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING RETURNING event_id',
        [p.eventId, p.from, p.to, p.amountCents, worker, p.jws],
      );
      if (inserted.rows.length === 0) return 'duplicate';
      await tx.query('INSERT INTO balances (account, cents) VALUES ($1, $2) ON CONFLICT (account) DO UPDATE SET cents = balances.cents + $2', [p.to, p.amountCents]);
      await tx.query('INSERT INTO balances (account, cents) VALUES ($1, $2) ON CONFLICT (account) DO UPDATE SET cents = balances.cents + $2', [p.from, -p.amountCents]);
      return 'applied';
    });
  }

  async summary(): Promise<{ payments: number; distinct: number; totalCents: number; sumOfBalances: number; byWorker: Record<string, number> }> {
    const totals = await this.db.query<{ n: number; d: number; total: string | null }>('SELECT count(*)::int AS n, count(DISTINCT event_id)::int AS d, sum(amount_cents)::text AS total FROM payments');
    const balances = await this.db.query<{ s: string | null }>('SELECT sum(cents)::text AS s FROM balances');
    const workers = await this.db.query<{ applied_by: string; n: number }>('SELECT applied_by, count(*)::int AS n FROM payments GROUP BY applied_by ORDER BY applied_by');
    const row = totals.rows[0]!;
    return {
      payments: row.n,
      distinct: row.d,
      totalCents: Number(row.total ?? 0),
      sumOfBalances: Number(balances.rows[0]?.s ?? 0),
      byWorker: Object.fromEntries(workers.rows.map((r) => [r.applied_by, r.n])),
    };
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}
