/**
 * HTTP resource bounds against a real relay: a request whose body does not arrive in
 * time is answered BODY_TIMEOUT and its connection closed, and one user cannot hold more
 * than MAX_INFLIGHT_HTTP_PER_USER of the relay's request slots with slow bodies.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestDevice } from '../helpers/device.js';
import { registerDevice } from '../helpers/flows.js';
import { type HeldRequest, holdRequest, metricSample, request } from '../helpers/http.js';
import { type TestIssuer, createTestIssuer } from '../helpers/jwt.js';
import { type TestDatabase, createTestDatabase, describePg } from '../helpers/pg.js';
import { type RelayProcess, killAllRelays, makeTempDir, startRelay } from '../helpers/relay.js';
import { BUNDLE_FETCH_BURST } from '../../protocol/limits.js';
import { MAX_INFLIGHT_HTTP, MAX_INFLIGHT_HTTP_PER_USER } from '../../server/limits.js';

/** Short, so that the test waits little; the default is HTTP_BODY_TIMEOUT_MS. */
const BODY_TIMEOUT_MS = 4000;

let issuer: TestIssuer;

afterAll(async () => {
  await killAllRelays();
});

/** HTTP requests in flight on the relay, not counting the /metrics request asking. */
async function inFlight(relay: RelayProcess): Promise<number> {
  const res = await request(relay.baseUrl, 'GET', '/metrics');
  return (metricSample(res.text, 'hermetic_http_requests_in_flight') ?? Number.NaN) - 1;
}

async function until(what: string, cond: () => Promise<boolean>, attempts = 200): Promise<void> {
  for (let i = 0; i < attempts; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describePg('HTTP request bounds', (server) => {
  let db: TestDatabase;
  let relay: RelayProcess;

  beforeAll(async () => {
    issuer = await createTestIssuer(makeTempDir('hermetic-idp-'));
    db = await createTestDatabase(server);
    relay = await startRelay({ databaseUrl: db.url, env: { ...issuer.env, HERMETIC_HTTP_BODY_TIMEOUT_MS: String(BODY_TIMEOUT_MS) } });
  });

  afterAll(async () => {
    await relay?.stop();
    await db?.drop();
  });

  it('answers a body that has not fully arrived in time with BODY_TIMEOUT (408) and closes the connection', async () => {
    const d = new TestDevice('slow-body');
    const held = holdRequest(relay.baseUrl, { method: 'POST', path: '/v1/devices', token: await issuer.mint(d.userId), declaredLength: 4096, body: '{"deviceId":' });
    const res = await held.answered;
    expect({ status: res.status, code: res.body?.error?.code, closedByServer: res.closedByServer }).toEqual({ status: 408, code: 'BODY_TIMEOUT', closedByServer: true });
    expect(await inFlight(relay)).toBe(0);
    // Nothing was registered, and the relay serves the next request normally.
    const listed = await request(relay.baseUrl, 'GET', `/v1/users/${d.userId}/devices`, { token: await issuer.mint(d.userId) });
    expect(listed.status, listed.text).toBe(200);
    expect(listed.body.devices).toEqual([]);
  });

  it(`lets one user hold at most MAX_INFLIGHT_HTTP_PER_USER (${MAX_INFLIGHT_HTTP_PER_USER}) requests at once (RATE_LIMITED); others are served`, async () => {
    const hog = 'http-hog';
    const hogToken = await issuer.mint(hog);
    const held: HeldRequest[] = [];
    for (let i = 0; i < MAX_INFLIGHT_HTTP_PER_USER; i++) {
      held.push(holdRequest(relay.baseUrl, { method: 'POST', path: '/v1/devices', token: hogToken, declaredLength: 4096, body: '{' }));
    }
    await until('the held requests to be in flight', async () => (await inFlight(relay)) === MAX_INFLIGHT_HTTP_PER_USER);
    // The held requests take their user's slots once their tokens verify (concurrently
    // with the body read): from then on, every further request of that user is refused.
    let refused: Awaited<ReturnType<typeof request>> | undefined;
    await until('a request of that user to be refused', async () => {
      const res = await request(relay.baseUrl, 'GET', `/v1/users/${hog}/devices`, { token: hogToken });
      if (res.status === 200) return false;
      refused = res;
      return true;
    });
    expect({ status: refused!.status, code: refused!.body?.error?.code }).toEqual({ status: 429, code: 'RATE_LIMITED' });
    // A request with a body is refused too, without its body being read.
    const withBody = await request(relay.baseUrl, 'POST', '/v1/devices', { token: hogToken, json: { entry: 'never read' } });
    expect(withBody.body?.error?.code).toBe('RATE_LIMITED');

    // Another user is served meanwhile.
    const other = await request(relay.baseUrl, 'GET', `/v1/users/${hog}/devices`, { token: await issuer.mint('http-bystander') });
    expect(other.status, other.text).toBe(200);

    // When the held bodies time out, their slots come back.
    const answers = await Promise.all(held.map((h) => h.answered));
    expect(answers.map((a) => a.body?.error?.code)).toEqual(held.map(() => 'BODY_TIMEOUT'));
    await registerDevice(relay.baseUrl, hogToken, new TestDevice(hog));
  });

  it('a user may still spend a whole bundle-fetch burst at once', () => {
    expect(MAX_INFLIGHT_HTTP_PER_USER).toBeGreaterThanOrEqual(BUNDLE_FETCH_BURST);
    expect(MAX_INFLIGHT_HTTP_PER_USER).toBeLessThan(MAX_INFLIGHT_HTTP);
  });

  it('gives a slot back when the client drops a request', async () => {
    const user = 'http-dropper';
    const token = await issuer.mint(user);
    const held = Array.from({ length: MAX_INFLIGHT_HTTP_PER_USER }, () =>
      holdRequest(relay.baseUrl, { method: 'POST', path: '/v1/devices', token, declaredLength: 4096, body: '{' }),
    );
    await until('the held requests to be in flight', async () => (await inFlight(relay)) === MAX_INFLIGHT_HTTP_PER_USER);
    for (const h of held) h.destroy();
    await until('the dropped requests to end', async () => (await inFlight(relay)) === 0);
    const res = await request(relay.baseUrl, 'GET', `/v1/users/${user}/devices`, { token });
    expect(res.status, res.text).toBe(200);
  });
});
