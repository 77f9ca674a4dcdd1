/**
 * Cross-origin HTTP for browser apps on another origin: preflights answered for the
 * listed origins only, answers readable by them (Access-Control-Allow-Origin), nothing
 * for an unlisted origin or when no origins are configured.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TestIssuer, createTestIssuer } from '../helpers/jwt.js';
import { type RelayProcess, killAllRelays, makeTempDir, startRelay } from '../helpers/relay.js';

let issuer: TestIssuer;
let relay: RelayProcess;
let plain: RelayProcess;

beforeAll(async () => {
  issuer = await createTestIssuer(makeTempDir('hermetic-idp-'));
  [relay, plain] = await Promise.all([
    startRelay({ env: { ...issuer.env, HERMETIC_CORS_ORIGINS: 'https://app.example' } }),
    startRelay({ env: issuer.env }),
  ]);
});

afterAll(async () => {
  await killAllRelays();
});

const preflight = (base: string, origin: string) =>
  fetch(`${base}/v1/users/alice/devices`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' } });

describe('CORS', () => {
  it('answers a preflight from a listed origin, and nothing for others', async () => {
    const ok = await preflight(relay.baseUrl, 'https://app.example');
    expect(ok.status).toBe(204);
    expect(ok.headers.get('access-control-allow-origin')).toBe('https://app.example');
    expect(ok.headers.get('access-control-allow-headers')).toContain('authorization');
    expect(ok.headers.get('access-control-allow-methods')).toContain('PUT');
    const other = await preflight(relay.baseUrl, 'https://evil.example');
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
    const off = await preflight(plain.baseUrl, 'https://app.example');
    expect(off.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('lets a listed origin read answers, errors included', async () => {
    const token = await issuer.mint('alice');
    const res = await fetch(`${relay.baseUrl}/v1/users/alice/devices`, { headers: { origin: 'https://app.example', authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('access-control-allow-origin')).toBe('https://app.example');
    const refused = await fetch(`${relay.baseUrl}/v1/users/alice/devices`, { headers: { origin: 'https://app.example' } });
    expect(refused.status).toBe(401);
    expect(refused.headers.get('access-control-allow-origin')).toBe('https://app.example');
    const foreign = await fetch(`${relay.baseUrl}/v1/users/alice/devices`, { headers: { origin: 'https://evil.example', authorization: `Bearer ${token}` } });
    expect(foreign.headers.get('access-control-allow-origin')).toBeNull();
  });
});
