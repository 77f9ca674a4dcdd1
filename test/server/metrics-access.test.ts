/**
 * Who can read /metrics: open on the main port in development; behind a bearer token
 * (HERMETIC_METRICS_TOKEN); on a listener of its own (HERMETIC_METRICS_PORT, loopback by
 * default) and then not on the main port; and in production not at all unless one of
 * the two is configured.
 */
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NoteSigner } from '../../crypto/tlog/note.js';
import { metricsTokenMatches } from '../../server/http/metrics-route.js';
import { expectError, metricSample, request } from '../helpers/http.js';
import { type TestIssuer, createTestIssuer } from '../helpers/jwt.js';
import { type TestDatabase, createTestDatabase, describePg } from '../helpers/pg.js';
import { type RelayProcess, killAllRelays, makeTempDir, startRelay } from '../helpers/relay.js';

const TOKEN = 'scrape-0123456789abcdef-XYZ';
/** Production on PostgreSQL needs the receipt log's signing key. */
const LOG_KEY = NoteSigner.generate('relay.example/log').exportSignerKey();

afterAll(async () => {
  await killAllRelays();
});

function listening(relay: RelayProcess): Record<string, unknown> {
  const line = relay.logs().find((l) => l.msg === 'relay listening');
  expect(line).toBeDefined();
  return line!;
}

describe('metricsTokenMatches', () => {
  it('matches the token only', () => {
    expect(metricsTokenMatches(TOKEN, TOKEN)).toBe(true);
    expect(metricsTokenMatches(`${TOKEN.slice(0, -1)}z`, TOKEN)).toBe(false);
    expect(metricsTokenMatches(TOKEN.slice(0, -1), TOKEN)).toBe(false);
    expect(metricsTokenMatches(`${TOKEN}x`, TOKEN)).toBe(false);
    expect(metricsTokenMatches('', TOKEN)).toBe(false);
  });
});

describePg('/metrics access', (server) => {
  let issuer: TestIssuer;
  let db: TestDatabase;

  beforeAll(async () => {
    issuer = await createTestIssuer(makeTempDir('hermetic-idp-'));
    db = await createTestDatabase(server);
  });

  afterAll(async () => {
    await killAllRelays();
    await db?.drop();
  });

  const start = (env: Record<string, string>): Promise<RelayProcess> => startRelay({ databaseUrl: db.url, env: { ...issuer.env, ...env } });

  it('HERMETIC_METRICS_TOKEN: /metrics needs Authorization: Bearer <token> (UNAUTHENTICATED otherwise)', async () => {
    const relay = await start({ HERMETIC_METRICS_TOKEN: TOKEN });
    expectError(await request(relay.baseUrl, 'GET', '/metrics'), 401, 'UNAUTHENTICATED');
    expectError(await request(relay.baseUrl, 'GET', '/metrics', { token: `${TOKEN.slice(0, -1)}Q` }), 401, 'UNAUTHENTICATED');
    expectError(await request(relay.baseUrl, 'GET', '/metrics', { token: TOKEN.slice(1) }), 401, 'UNAUTHENTICATED');
    // A user's token is not a metrics token.
    expectError(await request(relay.baseUrl, 'GET', '/metrics', { token: await issuer.mint('someone') }), 401, 'UNAUTHENTICATED');
    const ok = await request(relay.baseUrl, 'GET', '/metrics', { token: TOKEN });
    expect(ok.status).toBe(200);
    expect(ok.text).toContain('# TYPE hermetic_connections_open gauge');
    expect((await request(relay.baseUrl, 'GET', '/healthz')).status).toBe(200);
    // The token is never logged.
    expect(relay.stdout() + relay.stderr()).not.toContain(TOKEN);
    await relay.stop();
  });

  it('HERMETIC_METRICS_PORT: /metrics moves to its own loopback listener, which serves nothing else', async () => {
    const relay = await start({ HERMETIC_METRICS_PORT: '0' });
    const where = listening(relay).metrics as { host: string; port: number };
    expect(where.host).toBe('127.0.0.1');
    expect(where.port).toBeGreaterThan(0);
    expect(where.port).not.toBe(relay.port);
    const metricsUrl = `http://127.0.0.1:${where.port}`;

    expectError(await request(relay.baseUrl, 'GET', '/metrics'), 404, 'NOT_FOUND');
    const ok = await request(metricsUrl, 'GET', '/metrics');
    expect(ok.status).toBe(200);
    expect(ok.text).toContain('# TYPE hermetic_connections_open gauge');
    expectError(await request(metricsUrl, 'GET', '/v1/users/x/devices', { token: await issuer.mint('x') }), 404, 'NOT_FOUND');
    expectError(await request(metricsUrl, 'GET', '/healthz'), 404, 'NOT_FOUND');
    await relay.stop();
  });

  it('both: the metrics listener asks for the token too', async () => {
    const relay = await start({ HERMETIC_METRICS_PORT: '0', HERMETIC_METRICS_TOKEN: TOKEN });
    const metricsUrl = `http://127.0.0.1:${(listening(relay).metrics as { port: number }).port}`;
    expectError(await request(metricsUrl, 'GET', '/metrics'), 401, 'UNAUTHENTICATED');
    expect((await request(metricsUrl, 'GET', '/metrics', { token: TOKEN })).status).toBe(200);
    expectError(await request(relay.baseUrl, 'GET', '/metrics', { token: TOKEN }), 404, 'NOT_FOUND');
    await relay.stop();
  });

  it('in production, /metrics is not served unless a token or a metrics port is configured', async () => {
    const closed = await start({ NODE_ENV: 'production', HERMETIC_PUBLIC_URL: 'wss://relay.example', HERMETIC_LOG_KEY: LOG_KEY });
    expectError(await request(closed.baseUrl, 'GET', '/metrics'), 404, 'NOT_FOUND');
    expect(listening(closed).metrics).toBe('off');
    expect(closed.logs().some((l) => l.level === 40 && String(l.msg).includes('HERMETIC_METRICS_TOKEN'))).toBe(true);
    await closed.stop();

    const withToken = await start({ NODE_ENV: 'production', HERMETIC_PUBLIC_URL: 'wss://relay.example', HERMETIC_METRICS_TOKEN: TOKEN, HERMETIC_LOG_KEY: LOG_KEY });
    expectError(await request(withToken.baseUrl, 'GET', '/metrics'), 401, 'UNAUTHENTICATED');
    expect((await request(withToken.baseUrl, 'GET', '/metrics', { token: TOKEN })).status).toBe(200);
    await withToken.stop();
  });

  it('in development with neither, /metrics stays open on the main port', async () => {
    const relay = await start({});
    expect(listening(relay).metrics).toBe('main');
    const res = await request(relay.baseUrl, 'GET', '/metrics');
    expect(res.status).toBe(200);
    // The relay's open descriptors (counted without listing them on its event loop): the
    // same as its /proc listing, give or take a pool connection opened or closed meanwhile.
    const fds = metricSample(res.text, 'hermetic_process_open_fds');
    expect(fds).toBeGreaterThan(0);
    expect(Math.abs(fds! - fs.readdirSync(`/proc/${relay.pid}/fd`).length)).toBeLessThanOrEqual(3);
    await relay.stop();
  });
});
