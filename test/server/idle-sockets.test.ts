/**
 * 10,000 idle unauthenticated WebSockets against a real relay process: the relay's
 * memory stays bounded, and a device still registers, connects and gets its envelopes
 * while they are open. The per-address cap on unauthenticated sockets is raised for it
 * (every socket comes from 127.0.0.1), and so is the auth timeout, so that all of them
 * are open at once; test/server/connection-caps.test.ts shows the cap.
 */
import fs from 'node:fs';
import net from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { MAX_PREAUTH_FRAME_BYTES } from '../../protocol/limits.js';
import { MAX_AUTH_TIMEOUT_MS } from '../../server/limits.js';
import { TestDevice } from '../helpers/device.js';
import { registerDevice } from '../helpers/flows.js';
import { metricSample, request } from '../helpers/http.js';
import { type TestIssuer, createTestIssuer } from '../helpers/jwt.js';
import { type TestDatabase, createTestDatabase, describePg } from '../helpers/pg.js';
import { type RelayProcess, killAllRelays, makeTempDir, startRelay } from '../helpers/relay.js';
import { RawClient } from '../mailbox/raw-client.js';

const SOCKETS = 10_000;
/** Sockets being opened at once. */
const BATCH = 500;
/**
 * What one idle unauthenticated socket may cost the relay, at most. Measured: ~3 KiB
 * (uWS's socket and WebSocket structs, the connection's user data with its challenge,
 * its auth timer). The bound is the size of one pre-auth frame, MAX_PREAUTH_FRAME_BYTES
 * (16 KiB): a relay that kept any per-socket read or write buffer of the sizes it
 * allows would exceed it, and one that buffered without bound (1 MiB frames) would
 * exceed it many times over.
 */
const MAX_BYTES_PER_IDLE_SOCKET = MAX_PREAUTH_FRAME_BYTES;

function vmRssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}

interface IdleSocket {
  readonly socket: net.Socket;
  /** Set when the relay closed the socket. */
  closedAt: number | undefined;
}

/** Opens a WebSocket by hand (no client library: 10,000 of them must be cheap) and
 * resolves once the relay's challenge has arrived; the socket then stays idle. */
function openIdle(port: number): Promise<IdleSocket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const idle: IdleSocket = { socket, closedAt: undefined };
    let seen = '';
    let done = false;
    socket.setEncoding('latin1');
    socket.on('connect', () => {
      socket.write(
        'GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
          'Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n\r\n',
      );
    });
    socket.on('data', (d: string) => {
      if (done) return;
      seen += d;
      if (!seen.startsWith('HTTP/1.1 101')) {
        if (seen.includes('\r\n')) {
          done = true;
          reject(new Error(`upgrade refused: ${seen.split('\r\n')[0]}`));
          socket.destroy();
        }
        return;
      }
      if (seen.includes('"challenge"')) {
        done = true;
        resolve(idle);
      }
    });
    socket.on('close', () => {
      idle.closedAt ??= Date.now();
      if (!done) {
        done = true;
        reject(new Error('closed before the challenge'));
      }
    });
    socket.on('error', () => undefined);
  });
}

let issuer: TestIssuer;

afterAll(async () => {
  await killAllRelays();
});

describePg('10,000 idle unauthenticated sockets', (server) => {
  let db: TestDatabase;
  let relay: RelayProcess;
  const sockets: IdleSocket[] = [];

  beforeAll(async () => {
    issuer = await createTestIssuer(makeTempDir('hermetic-idp-'));
    db = await createTestDatabase(server);
    relay = await startRelay({
      databaseUrl: db.url,
      env: {
        ...issuer.env,
        HERMETIC_MAX_UNAUTHENTICATED_PER_ADDRESS: String(2 * SOCKETS),
        // The longest auth timeout a relay allows: opening 10,000 sockets on a busy
        // machine can take longer than the default 10 s, and they must all be open at once.
        HERMETIC_AUTH_TIMEOUT_MS: String(MAX_AUTH_TIMEOUT_MS),
      },
    });
  });

  afterAll(async () => {
    for (const s of sockets) s.socket.destroy();
    await relay?.stop();
    await db?.drop();
  });

  it('keep relay memory bounded, and a device still connects and gets its envelopes', { timeout: 120_000 }, async () => {
    const alice = new TestDevice('idle-alice');
    const bob = new TestDevice('idle-bob');
    const aliceToken = await issuer.mint(alice.userId);
    const bobToken = await issuer.mint(bob.userId);
    await registerDevice(relay.baseUrl, aliceToken, alice);
    await registerDevice(relay.baseUrl, bobToken, bob);
    // One connection of each kind first, so that lazily created state (pools, caches,
    // compiled code) is not counted as the sockets' cost.
    const warm = await RawClient.connect(relay.wsUrl, alice, aliceToken);
    warm.close();
    await warm.waitClosed();
    (await openIdle(relay.port)).socket.destroy();
    await new Promise((r) => setTimeout(r, 200));
    const rssBefore = vmRssBytes(relay.pid);

    const t0 = Date.now();
    for (let i = 0; i < SOCKETS; i += BATCH) {
      sockets.push(...(await Promise.all(Array.from({ length: Math.min(BATCH, SOCKETS - i) }, () => openIdle(relay.port)))));
    }
    const openedMs = Date.now() - t0;
    const rssAfter = vmRssBytes(relay.pid);
    const metrics = (await request(relay.baseUrl, 'GET', '/metrics')).text;
    const perSocket = (rssAfter - rssBefore) / SOCKETS;
    console.log(
      `idle sockets: ${SOCKETS} opened in ${openedMs} ms; relay RSS ${(rssBefore / 2 ** 20).toFixed(1)} -> ${(rssAfter / 2 ** 20).toFixed(1)} MiB, ` +
        `${(perSocket / 1024).toFixed(2)} KiB per socket`,
    );
    // All of them open at once on the relay, none authenticated.
    expect(metricSample(metrics, 'hermetic_connections_unauthenticated')).toBe(SOCKETS);
    expect(metricSample(metrics, 'hermetic_connections_open')).toBe(SOCKETS);
    expect(perSocket).toBeLessThan(MAX_BYTES_PER_IDLE_SOCKET);

    // Meanwhile a device connects, is sent an envelope and receives it.
    const bobConn = await RawClient.connect(relay.wsUrl, bob, bobToken);
    await bobConn.waitJson((f) => f.type === 'queue_empty');
    const aliceConn = await RawClient.connect(relay.wsUrl, alice, aliceToken);
    const { id } = aliceConn.send(bob.userId, [{ deviceId: bob.deviceId, payload: new TextEncoder().encode('through the crowd') }]);
    expect(await aliceConn.waitJson((f) => f.id === id)).toMatchObject({ type: 'stored', recipients: [{ deviceId: bob.deviceId, seq: 1 }] });
    const [env] = await bobConn.waitDelivered(1);
    expect(new TextDecoder().decode(env!.payload)).toBe('through the crowd');
    expect(env!.senderUserId).toBe(alice.userId);
    const finishedAt = Date.now();
    // The idle sockets were all still open throughout.
    expect(sockets.filter((s) => s.closedAt !== undefined && s.closedAt <= finishedAt)).toEqual([]);
    aliceConn.close();
    bobConn.close();
  });
});
