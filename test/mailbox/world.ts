/**
 * A mailbox test world: a token issuer, one storage backend (PGlite in a temporary data
 * directory, or a fresh PostgreSQL database) and one or more relay processes on it, plus
 * registered users and devices. Mailbox suites start one world per file and driver in
 * beforeAll, and give every test its own users, so tests never see each other's mail.
 */
import pg from 'pg';
import { expect } from 'vitest';
import { TestDevice } from '../helpers/device.js';
import { registerDevice } from '../helpers/flows.js';
import { metricSample, request } from '../helpers/http.js';
import { type TestIssuer, createTestIssuer } from '../helpers/jwt.js';
import { type TestDatabase, createTestDatabase, pgServer } from '../helpers/pg.js';
import { type RelayProcess, makeTempDir, startRelay } from '../helpers/relay.js';
import { type ConnectOptions, type JsonFrame, RawClient, type SendOptions } from './raw-client.js';

export interface Driver {
  readonly name: 'PGlite' | 'PostgreSQL';
  readonly needsPg: boolean;
}

export const PGLITE: Driver = { name: 'PGlite', needsPg: false };
export const POSTGRES: Driver = { name: 'PostgreSQL', needsPg: true };
export const DRIVERS: readonly Driver[] = [PGLITE, POSTGRES];

export function driverAvailable(d: Driver): boolean {
  return !d.needsPg || pgServer !== undefined;
}

export interface TestUser {
  readonly userId: string;
  readonly token: string;
  readonly devices: TestDevice[];
}

export interface WorldOptions {
  readonly relays?: number;
  /** The database to use instead of a fresh one on the shared server (dropped by stop()). */
  readonly database?: TestDatabase;
  /** The URL relay `index` connects with (e.g. through a proxy); the database's by default. */
  readonly databaseUrlFor?: (index: number, url: string) => string;
  /** Further relay variables. */
  readonly env?: Readonly<Record<string, string>>;
}

let userCounter = 0;

export class World {
  readonly relays: RelayProcess[] = [];
  private readonly clients = new Set<RawClient>();
  /** Variables given to one relay only (kept for its restart), by index. */
  private readonly relayEnv = new Map<number, Readonly<Record<string, string>>>();

  private constructor(
    readonly driver: Driver,
    readonly issuer: TestIssuer,
    readonly db: TestDatabase | undefined,
    /** PGlite's data directory (reused by a restarted relay). */
    readonly dataDir: string,
    private readonly opts: WorldOptions = {},
  ) {}

  /** Starts `relays` relay processes on one fresh database (several need PostgreSQL). */
  static async start(driver: Driver, opts: WorldOptions = {}): Promise<World> {
    const n = opts.relays ?? 1;
    if (n > 1 && !driver.needsPg) throw new Error('PGlite is single-process: several relays need PostgreSQL');
    const issuer = await createTestIssuer(makeTempDir('hermetic-idp-'));
    const db = driver.needsPg ? (opts.database ?? (await createTestDatabase())) : undefined;
    const world = new World(driver, issuer, db, makeTempDir(), opts);
    // Started one after another: the first applies the migrations.
    for (let i = 0; i < n; i++) await world.startRelay();
    return world;
  }

  /**
   * Starts one more relay on this world's database (PGlite: the same data directory),
   * with `env` over the world's variables.
   */
  async startRelay(opts: { env?: Readonly<Record<string, string>> } = {}): Promise<RelayProcess> {
    if (opts.env) this.relayEnv.set(this.relays.length, opts.env);
    const relay = await this.spawnRelay(this.relays.length);
    this.relays.push(relay);
    return relay;
  }

  /** Starts a relay in place of relay `index` (which must have exited), on the same storage. */
  async restartRelay(index = 0): Promise<RelayProcess> {
    const old = this.relays[index];
    if (!old || (old.proc.exitCode === null && old.proc.signalCode === null)) throw new Error(`relay ${index} is still running`);
    const relay = await this.spawnRelay(index);
    this.relays[index] = relay;
    return relay;
  }

  private spawnRelay(index: number): Promise<RelayProcess> {
    const url = this.db && (this.opts.databaseUrlFor?.(index, this.db.url) ?? this.db.url);
    return startRelay({
      env: { ...this.issuer.env, ...this.opts.env, ...this.relayEnv.get(index) },
      ...(url ? { databaseUrl: url, dataDir: makeTempDir() } : { dataDir: this.dataDir }),
    });
  }

  get relay(): RelayProcess {
    const r = this.relays[0];
    if (!r) throw new Error('no relay started');
    return r;
  }

  /** A new user with `devices` registered devices (unique name across the process),
   * whose token carries `claims` besides the usual ones. */
  async user(name: string, devices = 1, claims?: Record<string, unknown>): Promise<TestUser> {
    const userId = `${name}-${++userCounter}`;
    const token = await this.issuer.mint(userId, claims ? { claims } : {});
    const user: TestUser = { userId, token, devices: [] };
    for (let i = 0; i < devices; i++) await this.addDevice(user);
    return user;
  }

  async addDevice(user: TestUser): Promise<TestDevice> {
    const device = new TestDevice(user.userId, `d${user.devices.length + 1}`);
    await registerDevice(this.relay.baseUrl, user.token, device);
    user.devices.push(device);
    return device;
  }

  /** Connects and authenticates `device` of `user` (through relay `relayIndex`). */
  async connect(user: TestUser, device: TestDevice = firstDevice(user), opts: ConnectOptions & { relay?: number } = {}): Promise<RawClient> {
    const relay = this.relays[opts.relay ?? 0];
    if (!relay) throw new Error(`no relay ${opts.relay}`);
    const c = await RawClient.connect(relay.wsUrl, device, user.token, opts);
    this.clients.add(c);
    return c;
  }

  /** Fails the test if a relay process died. */
  async expectRelaysUp(): Promise<void> {
    for (const r of this.relays) {
      if (r.proc.exitCode !== null || r.proc.signalCode !== null) continue;
      const res = await request(r.baseUrl, 'GET', '/healthz');
      expect(res.status, 'relay health').toBe(200);
    }
  }

  closeClients(): void {
    for (const c of this.clients) c.terminate();
    this.clients.clear();
  }

  async stop(): Promise<void> {
    this.closeClients();
    await Promise.all(this.relays.map((r) => r.stop('SIGTERM')));
    await this.db?.drop();
  }
}

export function firstDevice(user: TestUser): TestDevice {
  const d = user.devices[0];
  if (!d) throw new Error(`${user.userId} has no device`);
  return d;
}

/** One SEND target per device, each with its own payload. */
export function targetsFor(user: TestUser, payload: (d: TestDevice) => Uint8Array, devices: readonly TestDevice[] = user.devices): Array<{ deviceId: string; payload: Uint8Array }> {
  return devices.map((d) => ({ deviceId: d.deviceId, payload: payload(d) }));
}

/**
 * Sends `count` single-device envelopes from `sender` to `to`'s first device, pipelined
 * within a window of 256 unanswered SENDs, and waits until every one is STORED. Payloads are `<label> <i>`.
 */
export async function sendMany(sender: RawClient, to: TestUser, count: number, label: string, opts: SendOptions & { size?: number } = {}): Promise<JsonFrame[]> {
  const device = firstDevice(to);
  const ids: number[] = [];
  await sender.sendWindowed(
    count,
    (i) => ({ recipientUserId: to.userId, targets: [{ deviceId: device.deviceId, payload: payload(`${label} ${i}`, opts.size) }], opts }),
    256,
    (_, sent) => ids.push(sent.id),
  );
  const want = new Set(ids);
  const answers: JsonFrame[] = [];
  let scanned = 0;
  await sender.until(
    () => {
      for (; scanned < sender.json.length; scanned++) {
        const f = sender.json[scanned]!;
        if ((f.type === 'stored' || f.type === 'error') && want.has(f.id as number)) answers.push(f);
      }
      return answers.length === count;
    },
    `${count} answers`,
    60_000,
  );
  const errors = answers.filter((f) => f.type !== 'stored');
  if (errors.length > 0) throw new Error(`SENDs refused: ${JSON.stringify(errors.slice(0, 3))}`);
  return answers;
}

/** A recognisable payload: a label, then `size` bytes total (padded). */
export function payload(label: string, size = 0): Uint8Array {
  const text = new TextEncoder().encode(label);
  const out = new Uint8Array(Math.max(size, text.length));
  out.set(text);
  return out;
}

export function text(p: Uint8Array): string {
  const end = p.indexOf(0);
  return new TextDecoder().decode(end === -1 ? p : p.subarray(0, end));
}

export function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

/** The value of one Prometheus sample (name plus exact label set), if present. */
export async function metric(relay: RelayProcess, series: string): Promise<number | undefined> {
  const res = await request(relay.baseUrl, 'GET', '/metrics');
  expect(res.status).toBe(200);
  return metricSample(res.text, series);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Commits an envelope for `user`'s first device straight into the database, as another
 * relay's commit would leave it, but with no NOTIFY of its own; `more` runs in the same
 * transaction (e.g. notices of its own, or other changes that commit with it).
 */
export async function commitUnannounced(world: World, user: TestUser, label: string, more?: (sql: pg.Client) => Promise<void>): Promise<void> {
  const sql = new pg.Client({ connectionString: world.db!.url });
  await sql.connect();
  try {
    const now = Date.now();
    await sql.query('BEGIN');
    const r = await sql.query<{ seq: string }>(
      'UPDATE mailboxes SET next_seq = next_seq + 1 WHERE user_id = $1 AND device_id = $2 RETURNING next_seq - 1 AS seq',
      [user.userId, firstDevice(user).deviceId],
    );
    await sql.query(
      `INSERT INTO envelopes (slot_ms, user_id, device_id, seq, envelope_id, sender_user, sender_device, stored_at_ms, expires_at_ms, size, payload)
       SELECT p.from_ms, $1, $2, $3, $4, 'someone', 'elsewhere', $5, $6, octet_length($7::bytea), $7
         FROM envelope_partitions p WHERE p.from_ms <= $5 AND p.to_ms > $5`,
      [user.userId, firstDevice(user).deviceId, r.rows[0]!.seq, Buffer.alloc(16, 7), now, now + 3_600_000, Buffer.from(payload(label))],
    );
    await more?.(sql);
    await sql.query('COMMIT');
  } finally {
    await sql.end();
  }
}
