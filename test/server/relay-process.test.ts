/**
 * The relay as an operator runs it: `hermetic serve` in a child process, talked to over
 * real sockets. Health, readiness and metrics endpoints; graceful shutdown on SIGTERM
 * (open WebSockets closed with 1001 "going away", exit code 0); and the PGlite data
 * directory lock that keeps a second process off the same database files.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestDevice } from '../helpers/device.js';
import { connectAuthenticated, registerDevice } from '../helpers/flows.js';
import { metricSample, request } from '../helpers/http.js';
import { type TestDatabase, createTestDatabase, describePg } from '../helpers/pg.js';
import { type RelayProcess, killAllRelays, relayEnv, runCli, startRelay } from '../helpers/relay.js';
import { WsClient } from '../helpers/ws.js';

/** A generous guard against a hang, not a performance assertion. */
const SHUTDOWN_HANG_GUARD_MS = 10_000;

afterAll(async () => {
  await killAllRelays();
});

async function devToken(relay: RelayProcess, user: string): Promise<string> {
  const r = await runCli(['token', user], relay.env);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.trim();
}

function healthChecks(getRelay: () => RelayProcess): void {
  it('answers /healthz with 200', async () => {
    const res = await request(getRelay().baseUrl, 'GET', '/healthz');
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ status: 'ok' });
  });

  it('answers /readyz with 200 ready once migrations are applied', async () => {
    const res = await request(getRelay().baseUrl, 'GET', '/readyz');
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ status: 'ready' });
  });

  it('serves Prometheus metrics, counting frames, errors and database statements', async () => {
    const relay = getRelay();
    // Some traffic: a ping and an unknown frame on a fresh connection.
    const { ws } = await WsClient.connectWithChallenge(relay.wsUrl);
    ws.send({ type: 'ping', id: 1 });
    expect(await ws.reply()).toEqual({ type: 'pong', id: 1 });
    ws.send({ type: 'no-such-frame' });
    expect((await ws.reply()).code).toBe('UNKNOWN_FRAME');

    const res = await request(relay.baseUrl, 'GET', '/metrics');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    for (const name of ['hermetic_connections_open', 'hermetic_frames_in_total', 'hermetic_errors_total', 'hermetic_db_query_seconds']) {
      expect(res.text).toContain(`# TYPE ${name} `);
    }
    expect(metricSample(res.text, 'hermetic_connections_open')).toBeGreaterThanOrEqual(1);
    expect(metricSample(res.text, 'hermetic_frames_in_total{type="ping"}')).toBeGreaterThanOrEqual(1);
    expect(metricSample(res.text, 'hermetic_errors_total{code="UNKNOWN_FRAME"}')).toBeGreaterThanOrEqual(1);
    // Migrations and the readiness check ran statements through the instrumented driver.
    expect(metricSample(res.text, 'hermetic_db_query_seconds_count')).toBeGreaterThan(0);
    ws.close();
    await ws.waitClosed();
  });
}

describe('relay process on PGlite', () => {
  let relay: RelayProcess;
  let token: string;
  const device = new TestDevice('shutdown-user');

  beforeAll(async () => {
    relay = await startRelay();
    token = await devToken(relay, device.userId);
  });

  it('logs which storage and auth mode it runs with', () => {
    const listening = relay.logs().find((l) => l.msg === 'relay listening');
    expect(listening).toMatchObject({ storage: 'pglite', auth: 'dev', host: '127.0.0.1' });
  });

  healthChecks(() => relay);

  it('a second relay on the same data directory refuses to start, naming the directory and the holder', async () => {
    const second = await runCli(['serve'], relayEnv({}, relay.dataDir));
    expect(second.code).not.toBe(0);
    expect(second.code).toBe(2);
    expect(second.stderr).toContain(relay.dataDir);
    expect(second.stderr).toContain(`pid ${relay.pid}`);
    expect(second.stdout).not.toContain('relay listening');
    // The first relay is unaffected.
    expect((await request(relay.baseUrl, 'GET', '/readyz')).status).toBe(200);
  });

  it('on SIGTERM closes open WebSockets with 1001 and exits 0', async () => {
    await registerDevice(relay.baseUrl, token, device);
    const authed = await connectAuthenticated(relay.wsUrl, token, device);
    const { ws: unauthenticated } = await WsClient.connectWithChallenge(relay.wsUrl);

    const stopped = relay.stop('SIGTERM');
    const [closeAuthed, closeUnauth, exit] = await Promise.all([authed.waitClosed(), unauthenticated.waitClosed(), stopped]);
    expect(closeAuthed.code).toBe(1001);
    expect(closeUnauth.code).toBe(1001);
    expect({ code: exit.code, signal: exit.signal }).toEqual({ code: 0, signal: null });
    expect(exit.ms).toBeLessThan(SHUTDOWN_HANG_GUARD_MS);
    const msgs = relay.logs().map((l) => l.msg);
    expect(msgs).toContain('shutting down');
    expect(msgs).toContain('relay stopped');
    expect(relay.stderr()).not.toMatch(/error|fatal/i);
  });

  it('releases the data directory on exit: a new relay on it starts and still has the data', async () => {
    const again = await startRelay({ dataDir: relay.dataDir });
    const res = await request(again.baseUrl, 'GET', `/v1/users/${device.userId}/devices`, { token });
    expect(res.status, res.text).toBe(200);
    expect(res.body.devices.map((d: { deviceId: string }) => d.deviceId)).toEqual([device.deviceId]);
    // Migrations were already applied: nothing new this time.
    expect(again.logs().find((l) => l.msg === 'storage ready')).toMatchObject({ applied: [] });
    const exit = await again.stop('SIGTERM');
    expect(exit.code).toBe(0);
  });
});

describePg('relay process on PostgreSQL', () => {
  let relay: RelayProcess;
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
    relay = await startRelay({ databaseUrl: db.url });
  });

  afterAll(async () => {
    await killAllRelays();
    await db?.drop();
  });

  it('logs that it runs on PostgreSQL', () => {
    expect(relay.logs().find((l) => l.msg === 'relay listening')).toMatchObject({ storage: 'pg' });
  });

  healthChecks(() => relay);

  it('on SIGTERM closes an authenticated WebSocket with 1001 and exits 0', async () => {
    const device = new TestDevice('pg-shutdown-user');
    const token = await devToken(relay, device.userId);
    await registerDevice(relay.baseUrl, token, device);
    const ws = await connectAuthenticated(relay.wsUrl, token, device);
    const [close, exit] = await Promise.all([ws.waitClosed(), relay.stop('SIGTERM')]);
    expect(close.code).toBe(1001);
    expect({ code: exit.code, signal: exit.signal }).toEqual({ code: 0, signal: null });
    expect(exit.ms).toBeLessThan(SHUTDOWN_HANG_GUARD_MS);
  });
});
