/**
 * The buses relays wake each other on, for running the multi-relay suites once on each:
 * PostgreSQL NOTIFY (the default) and NATS (HERMETIC_NATS_URL). Both need PostgreSQL
 * (relays share a database); NATS needs a NATS server too.
 */
import pg from 'pg';
import { MAILBOX_CHANNEL } from '../../server/fleet/notice.js';
import { natsAvailable, natsClient, natsEnv, natsMissing, natsPrefix } from './nats.js';
import { pgMissing, pgServer } from './pg.js';

export interface TestBus {
  readonly name: string;
  readonly kind: 'pg' | 'nats';
  /** Whether this machine has what the bus needs (PostgreSQL, and NATS for NATS). */
  readonly available: boolean;
  /** Registers the skipped (or, when required, failing) test for a missing server. */
  missing(what: string): void;
  /** The relay variables of a new fleet on this bus (its own NATS subject). */
  fleet(): TestFleet;
}

export interface TestFleet {
  readonly env: Readonly<Record<string, string>>;
  /** Whether notices go with a transaction (NOTIFY) rather than after its commit (NATS). */
  readonly transactional: boolean;
  /**
   * Sends raw notice payloads as another relay would: over NOTIFY on `sql` (in the
   * transaction it has open, if any: delivered on commit); over NATS, at once.
   */
  publish(payloads: readonly string[], sql?: pg.Client): Promise<void>;
}

export const NOTIFY_BUS: TestBus = {
  name: 'PostgreSQL NOTIFY',
  kind: 'pg',
  available: pgServer !== undefined,
  missing: pgMissing,
  fleet: () => ({
    env: {},
    transactional: true,
    publish: async (payloads, sql) => {
      if (!sql) throw new Error('NOTIFY needs a connection to the fleet\'s database');
      for (const p of payloads) await sql.query('SELECT pg_notify($1, $2)', [MAILBOX_CHANNEL, p]);
    },
  }),
};

export const NATS_BUS: TestBus = {
  name: 'NATS',
  kind: 'nats',
  available: pgServer !== undefined && natsAvailable,
  missing: (what) => (pgServer === undefined ? pgMissing(what) : natsMissing(what)),
  fleet: () => {
    const prefix = natsPrefix();
    return {
      env: natsEnv(prefix),
      transactional: false,
      publish: async (payloads) => {
        const nc = await natsClient();
        try {
          for (const p of payloads) nc.publish(`${prefix}.mailbox`, p);
          await nc.flush();
        } finally {
          await nc.close();
        }
      },
    };
  },
};

export const BUSES: readonly TestBus[] = [NOTIFY_BUS, NATS_BUS];
