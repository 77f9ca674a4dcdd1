/**
 * The relay's WebSocket admission against real relay processes: the per-address cap on
 * unauthenticated sockets, the connection cap, and the cap derived from the process's
 * open-file limit, which keeps descriptors free for the database pool (without it, a
 * relay at its descriptor limit could no longer open database connections).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestDevice } from '../helpers/device.js';
import { connectAuthenticated, registerDevice } from '../helpers/flows.js';
import { metricSample, refusedUpgrade, request } from '../helpers/http.js';
import { type TestIssuer, createTestIssuer } from '../helpers/jwt.js';
import { type TestDatabase, createTestDatabase, describePg } from '../helpers/pg.js';
import { type RelayProcess, killAllRelays, makeTempDir, relayEnv, runCli, startRelay } from '../helpers/relay.js';
import { WsClient } from '../helpers/ws.js';
import { CLOSE_CODES } from '../../protocol/errors.js';
import { DB_LISTEN_CONNECTIONS, FD_RESERVE_MARGIN } from '../../server/limits.js';

let issuer: TestIssuer;

beforeAll(async () => {
  issuer = await createTestIssuer(makeTempDir('hermetic-idp-'));
});

afterAll(async () => {
  await killAllRelays();
});

async function metrics(relay: RelayProcess): Promise<string> {
  const res = await request(relay.baseUrl, 'GET', '/metrics');
  expect(res.status).toBe(200);
  return res.text;
}

async function openUnauthenticated(relay: RelayProcess, n: number): Promise<WsClient[]> {
  return Promise.all(Array.from({ length: n }, async () => (await WsClient.connectWithChallenge(relay.wsUrl)).ws));
}

async function closeAll(sockets: readonly WsClient[]): Promise<void> {
  for (const s of sockets) s.close();
  await Promise.all(sockets.map((s) => s.waitClosed()));
}

/** Registers `n` devices, each the first device of a fresh user. */
async function devices(relay: RelayProcess, prefix: string, n: number): Promise<Array<{ device: TestDevice; token: string }>> {
  const out: Array<{ device: TestDevice; token: string }> = [];
  for (let i = 0; i < n; i++) {
    const device = new TestDevice(`${prefix}-${i}`);
    const token = await issuer.mint(device.userId);
    out.push({ device, token });
  }
  for (let i = 0; i < out.length; i += 8) await Promise.all(out.slice(i, i + 8).map(({ device, token }) => registerDevice(relay.baseUrl, token, device)));
  return out;
}

describePg('WebSocket admission caps', (server) => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase(server);
  });

  afterAll(async () => {
    await killAllRelays();
    await db?.drop();
  });

  it('refuses the N+1th unauthenticated socket from one address (429 TOO_MANY_UNAUTHENTICATED); closing or authenticating one frees a slot', async () => {
    const relay = await startRelay({ databaseUrl: db.url, env: { ...issuer.env, HERMETIC_MAX_UNAUTHENTICATED_PER_ADDRESS: '3' } });
    const [alice] = await devices(relay, 'cap-alice', 1);
    const sockets = await openUnauthenticated(relay, 3);

    const refused = await refusedUpgrade(relay.baseUrl, '/v1/ws');
    expect({ status: refused.status, code: refused.body?.error?.code }).toEqual({ status: 429, code: 'TOO_MANY_UNAUTHENTICATED' });
    expect(refused.headers['content-type']).toBe('application/json');
    let text = await metrics(relay);
    expect(metricSample(text, 'hermetic_connections_refused_total{reason="unauthenticated_per_address"}')).toBe(1);
    expect(metricSample(text, 'hermetic_connections_unauthenticated')).toBe(3);

    // Closing one frees its slot.
    sockets[0]!.close();
    await sockets[0]!.waitClosed();
    sockets[0] = (await WsClient.connectWithChallenge(relay.wsUrl)).ws;
    expect((await refusedUpgrade(relay.baseUrl, '/v1/ws')).status).toBe(429);

    // Authenticating frees it too; an authenticated socket never counts against the address.
    sockets[1]!.close();
    await sockets[1]!.waitClosed();
    const bound = await connectAuthenticated(relay.wsUrl, alice!.token, alice!.device);
    sockets[1] = (await WsClient.connectWithChallenge(relay.wsUrl)).ws;
    text = await metrics(relay);
    expect(metricSample(text, 'hermetic_connections_unauthenticated')).toBe(3);
    expect(metricSample(text, 'hermetic_connections_open')).toBe(4);
    expect(metricSample(text, 'hermetic_connections_refused_total{reason="unauthenticated_per_address"}')).toBe(2);

    await closeAll([...sockets, bound]);
    await relay.stop();
  });

  it('an unauthenticated socket closed by the auth timeout (HERMETIC_AUTH_TIMEOUT_MS) gives its slot back', async () => {
    const relay = await startRelay({ databaseUrl: db.url, env: { ...issuer.env, HERMETIC_MAX_UNAUTHENTICATED_PER_ADDRESS: '1', HERMETIC_AUTH_TIMEOUT_MS: '1000' } });
    const opened = Date.now();
    const [first] = await openUnauthenticated(relay, 1);
    expect((await refusedUpgrade(relay.baseUrl, '/v1/ws')).status).toBe(429);
    expect(await first!.reply(15_000)).toMatchObject({ type: 'error', code: 'AUTH_TIMEOUT' });
    expect(await first!.waitClosed()).toMatchObject({ code: CLOSE_CODES.AUTH_FAILED });
    expect(Date.now() - opened).toBeGreaterThanOrEqual(1000 - 50);
    const [second] = await openUnauthenticated(relay, 1);
    await closeAll([second!]);
    await relay.stop();
  });

  it('refuses upgrades past HERMETIC_MAX_CONNECTIONS (503 TOO_MANY_CONNECTIONS), counted in /metrics; a closed socket frees a slot', async () => {
    const relay = await startRelay({ databaseUrl: db.url, env: { ...issuer.env, HERMETIC_MAX_CONNECTIONS: '3' } });
    const users = await devices(relay, 'cap-bob', 2);
    const bound = [];
    for (const { device, token } of users) bound.push(await connectAuthenticated(relay.wsUrl, token, device));
    const [loose] = await openUnauthenticated(relay, 1);

    const refused = await refusedUpgrade(relay.baseUrl, '/v1/ws');
    expect({ status: refused.status, code: refused.body?.error?.code }).toEqual({ status: 503, code: 'TOO_MANY_CONNECTIONS' });
    const text = await metrics(relay);
    expect(metricSample(text, 'hermetic_connections_max')).toBe(3);
    expect(metricSample(text, 'hermetic_connections_refused_total{reason="capacity"}')).toBe(1);
    expect(metricSample(text, 'hermetic_errors_total{code="TOO_MANY_CONNECTIONS"}')).toBe(1);
    // HTTP is not refused.
    expect((await request(relay.baseUrl, 'GET', '/readyz')).status).toBe(200);

    bound[0]!.close();
    await bound[0]!.waitClosed();
    const again = await connectAuthenticated(relay.wsUrl, users[0]!.token, users[0]!.device);
    expect((await refusedUpgrade(relay.baseUrl, '/v1/ws')).status).toBe(503);
    await closeAll([again, bound[1]!, loose!]);
    await relay.stop();
  });

  it('derives the cap from the open-file limit, keeping the pool working when the cap is reached', async () => {
    const fdLimit = 320;
    const poolMax = 10;
    const cap = fdLimit - (poolMax + DB_LISTEN_CONNECTIONS + FD_RESERVE_MARGIN);
    const relay = await startRelay({ databaseUrl: db.url, fdLimit, env: { ...issuer.env, HERMETIC_DB_POOL_MAX: String(poolMax) } });
    expect(relay.logs().find((l) => l.msg === 'relay listening')).toMatchObject({ maxConnections: cap, fdLimit });

    // Fill the relay with authenticated sockets (they stay open; unauthenticated ones
    // would time out), then one more upgrade is refused.
    const users = await devices(relay, 'cap-fd', cap + 1);
    const open: WsClient[] = [];
    for (let i = 0; i < cap; i += 8) {
      open.push(...(await Promise.all(users.slice(i, Math.min(i + 8, cap)).map(({ device, token }) => connectAuthenticated(relay.wsUrl, token, device)))));
    }
    expect(open.length).toBe(cap);
    const refused = await refusedUpgrade(relay.baseUrl, '/v1/ws');
    expect(refused.body?.error?.code).toBe('TOO_MANY_CONNECTIONS');

    // At the cap, the database pool can still open every connection it may: concurrent
    // registrations all succeed (each holds a pool connection for its transaction).
    const late = Array.from({ length: 2 * poolMax }, (_, i) => new TestDevice(`cap-fd-late-${i}`));
    await Promise.all(late.map(async (d) => registerDevice(relay.baseUrl, await issuer.mint(d.userId), d)));
    // And a slot freed is a connection that authenticates.
    open.pop()!.close();
    await new Promise((r) => setTimeout(r, 50));
    const last = users[cap]!;
    open.push(await connectAuthenticated(relay.wsUrl, last.token, last.device));
    expect(relay.logs().filter((l) => l.msg === 'internal error')).toEqual([]);
    await closeAll(open);
    await relay.stop();
  });

  it('refuses to start when HERMETIC_MAX_CONNECTIONS leaves fewer descriptors than the reserve (exit 2, naming the variable)', async () => {
    const r = await runCli(['serve'], { ...relayEnv({ databaseUrl: db.url }, makeTempDir()), ...issuer.env, HERMETIC_MAX_CONNECTIONS: '300' }, 45_000, { fdLimit: 320 });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('HERMETIC_MAX_CONNECTIONS must be at most');
  });
});
