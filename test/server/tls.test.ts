/**
 * `hermetic serve` with HERMETIC_TLS_CERT_FILE and HERMETIC_TLS_KEY_FILE: https:// and
 * wss:// on the relay's own port (and on the metrics listener), with a self-signed
 * certificate made for the test by openssl; and the startup checks that refuse missing,
 * half-given or mismatched files with a message naming the variable.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { decodeBase64url } from '../../protocol/base64url.js';
import { TestDevice, verifiedChain } from '../helpers/device.js';
import { type RawResponse, collect } from '../helpers/http.js';
import { type TestIssuer, createTestIssuer } from '../helpers/jwt.js';
import { type TestDatabase, createTestDatabase, describePg } from '../helpers/pg.js';
import { type RelayProcess, killAllRelays, makeTempDir, relayEnv, runCli, startRelay } from '../helpers/relay.js';

/** A self-signed P-256 certificate for 127.0.0.1 and localhost, valid for a day. */
function selfSigned(dir: string, name: string): { cert: string; key: string } {
  const cert = path.join(dir, `${name}.cert.pem`);
  const key = path.join(dir, `${name}.key.pem`);
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'],
    { stdio: 'ignore' },
  );
  return { cert, key };
}

function httpsRequest(url: string, opts: { ca?: string; method?: string; token?: string; json?: unknown }): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const body = opts.json === undefined ? undefined : JSON.stringify(opts.json);
    const req = https.request(
      url,
      {
        method: opts.method ?? 'GET',
        ...(opts.ca !== undefined ? { ca: opts.ca } : {}),
        headers: {
          ...(opts.token !== undefined ? { authorization: `Bearer ${opts.token}` } : {}),
          ...(body !== undefined ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) } : {}),
        },
      },
      (res) => collect(res).then(resolve, reject),
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** Opens a wss:// connection trusting `ca`, and returns it with a queue of its text frames. */
function wssConnect(url: string, ca: string): Promise<{ ws: WebSocket; next: () => Promise<any> }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { ca });
    const frames: any[] = [];
    const waiters: Array<(f: any) => void> = [];
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      const f = JSON.parse(String(data));
      const w = waiters.shift();
      if (w) w(f);
      else frames.push(f);
    });
    ws.on('open', () =>
      resolve({
        ws,
        next: () => (frames.length > 0 ? Promise.resolve(frames.shift()) : new Promise((r) => waiters.push(r))),
      }),
    );
    ws.on('error', reject);
  });
}

let dir: string;
let certs: { cert: string; key: string };
let other: { cert: string; key: string };
let ca: string;

beforeAll(() => {
  dir = makeTempDir('hermetic-tls-');
  certs = selfSigned(dir, 'relay');
  other = selfSigned(dir, 'other');
  ca = fs.readFileSync(certs.cert, 'utf8');
});

afterAll(async () => {
  await killAllRelays();
});

describePg('TLS', (server) => {
  let issuer: TestIssuer;
  let db: TestDatabase;
  let relay: RelayProcess;
  let httpsBase: string;

  beforeAll(async () => {
    issuer = await createTestIssuer(makeTempDir('hermetic-idp-'));
    db = await createTestDatabase(server);
    relay = await startRelay({
      databaseUrl: db.url,
      env: { ...issuer.env, HERMETIC_TLS_CERT_FILE: certs.cert, HERMETIC_TLS_KEY_FILE: certs.key, HERMETIC_METRICS_PORT: '0' },
    });
    httpsBase = `https://127.0.0.1:${relay.port}`;
  });

  afterAll(async () => {
    await relay?.stop();
    await db?.drop();
  });

  it('serves https:// with the configured certificate (and nothing over plain http)', async () => {
    const res = await httpsRequest(`${httpsBase}/healthz`, { ca });
    expect({ status: res.status, body: res.body }).toEqual({ status: 200, body: { status: 'ok' } });
    // Not trusted without the CA: the handshake really uses that certificate.
    await expect(httpsRequest(`${httpsBase}/healthz`, {})).rejects.toThrow(/self[- ]signed/i);
    await expect(fetch(`http://127.0.0.1:${relay.port}/healthz`)).rejects.toThrow();
    expect(relay.logs().find((l) => l.msg === 'relay listening')).toMatchObject({ tls: { certFile: certs.cert } });
  });

  it('registers a device over https and authenticates it over wss:// end to end', async () => {
    const device = new TestDevice('tls-user');
    const token = await issuer.mint(device.userId);
    // The user's first device: the root of an empty device list.
    const reg = await httpsRequest(`${httpsBase}/v1/devices`, { ca, method: 'POST', token, json: device.enrolBody(verifiedChain(device.userId, [])) });
    expect(reg.status, reg.text).toBe(201);

    const { ws, next } = await wssConnect(`wss://127.0.0.1:${relay.port}/v1/ws`, ca);
    const challenge = await next();
    expect(challenge.type).toBe('challenge');
    const nonce = decodeBase64url(challenge.nonce)!;
    ws.send(JSON.stringify(device.authFrame(nonce, token, `wss://127.0.0.1:${relay.port}/v1/ws`)));
    expect(await next()).toEqual({ type: 'auth_ok', userId: device.userId, deviceId: device.deviceId, expiresAt: expect.any(Number) });
    ws.send(JSON.stringify({ type: 'ping', id: 3 }));
    let f = await next();
    while (f.type === 'queue_empty') f = await next();
    expect(f).toEqual({ type: 'pong', id: 3 });
    const closed = new Promise((r) => ws.on('close', r));
    ws.close();
    await closed;
  });

  it('serves the metrics listener over TLS too', async () => {
    const port = (relay.logs().find((l) => l.msg === 'relay listening')!.metrics as { port: number }).port;
    const res = await httpsRequest(`https://127.0.0.1:${port}/metrics`, { ca });
    expect(res.status).toBe(200);
    expect(res.text).toContain('hermetic_connections_open');
  });
});

describe('TLS startup checks', () => {
  const serve = (env: Record<string, string>): ReturnType<typeof runCli> => runCli(['serve'], { ...relayEnv({}, makeTempDir()), ...env });

  it('refuses a certificate without a key (and a key without a certificate)', async () => {
    const r = await serve({ HERMETIC_TLS_CERT_FILE: certs.cert });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('HERMETIC_TLS_CERT_FILE and HERMETIC_TLS_KEY_FILE');
    expect((await serve({ HERMETIC_TLS_KEY_FILE: certs.key })).code).toBe(2);
  });

  it('refuses missing, non-PEM and mismatched files, naming the variable', async () => {
    const missing = await serve({ HERMETIC_TLS_CERT_FILE: path.join(dir, 'nope.pem'), HERMETIC_TLS_KEY_FILE: certs.key });
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/HERMETIC_TLS_CERT_FILE: cannot read .*nope\.pem \(ENOENT\)/);

    const notPem = await serve({ HERMETIC_TLS_CERT_FILE: certs.key, HERMETIC_TLS_KEY_FILE: certs.key });
    expect(notPem.code).toBe(2);
    expect(notPem.stderr).toContain('HERMETIC_TLS_CERT_FILE');

    const mismatched = await serve({ HERMETIC_TLS_CERT_FILE: certs.cert, HERMETIC_TLS_KEY_FILE: other.key });
    expect(mismatched.code).toBe(2);
    expect(mismatched.stderr).toContain('HERMETIC_TLS_KEY_FILE: the key');
    // The key itself never appears in the message.
    expect(mismatched.stderr).not.toContain('PRIVATE KEY');
  });
});
