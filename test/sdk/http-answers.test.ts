/**
 * The SDK's HTTP calls against a hostile or stalled server (a small local HTTP server,
 * not our relay): an answer past MAX_ANSWER_BYTES is abandoned without reading the rest,
 * a declared Content-Length past it is refused unread, and a call that gets no complete
 * answer ends at the request timeout. The clock is a ManualClock: a timeout fires only
 * when the test advances it.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../client-sdk/clock.js';
import { HTTP_REQUEST_TIMEOUT_MS, MAX_ANSWER_BYTES } from '../../client-sdk/limits.js';
import { RelayHttp } from '../../client-sdk/transport/http.js';
import { sdkError } from './helpers.js';

const CHUNK = Buffer.alloc(256 * 1024, 0x20);
/** What the "endless" server sends at most: far more than the client may read. */
const ENDLESS_BYTES = 64 * 1024 * 1024;

interface Served {
  readonly url: string;
  /** Resolves once a request has arrived. */
  readonly requested: Promise<void>;
  /** Bytes of body written before the client went away (or all of them). */
  readonly sent: Promise<number>;
}

let servers: http.Server[] = [];

afterEach(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
  servers = [];
});

async function serve(handler: (res: http.ServerResponse, count: (n: number) => void) => void): Promise<Served> {
  let requested!: () => void;
  let finished!: (n: number) => void;
  const req = new Promise<void>((r) => (requested = r));
  const sent = new Promise<number>((r) => (finished = r));
  const server = http.createServer((_req, res) => {
    let n = 0;
    res.on('close', () => finished(n));
    requested();
    handler(res, (k) => (n += k));
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requested: req, sent };
}

function relayHttp(url: string, clock: ManualClock, onAnswer: () => void = () => undefined): RelayHttp {
  const fetchImpl = async (u: string, init: RequestInit) => {
    const res = await fetch(u, init);
    onAnswer();
    return res;
  };
  return new RelayHttp(url, async () => 'token', fetchImpl, { clock });
}

const COUNTS = { oneTimePrekeys: 3, oneTimeKemPrekeys: 2, hasSignedPrekey: true, hasLastResortKemPrekey: false };

describe('HTTP answers from the relay are bounded in size and time', () => {
  it('reads a normal answer (streamed, without Content-Length)', async () => {
    const s = await serve((res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(COUNTS));
    });
    expect(await relayHttp(s.url, new ManualClock()).keyCounts('d1')).toEqual(COUNTS);
  });

  it('abandons an endless answer past MAX_ANSWER_BYTES (RELAY_PROTOCOL_ERROR) and closes the connection', async () => {
    const s = await serve((res, count) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      let written = 0;
      const pump = (): void => {
        while (!res.destroyed && written < ENDLESS_BYTES) {
          written += CHUNK.length;
          count(CHUNK.length);
          if (!res.write(CHUNK)) {
            res.once('drain', pump);
            return;
          }
        }
        if (!res.destroyed) res.end();
      };
      pump();
    });
    const err = await sdkError(relayHttp(s.url, new ManualClock()).keyCounts('d1'));
    expect(err.code).toBe('RELAY_PROTOCOL_ERROR');
    expect(err.message).toMatch(/larger than/);
    // The client went away long before the server was done: what it sent is the cap plus
    // what socket buffers held, not the whole body.
    expect(await s.sent).toBeLessThan(ENDLESS_BYTES / 4);
  });

  it('refuses a declared Content-Length past MAX_ANSWER_BYTES without waiting for the body', async () => {
    const s = await serve((res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(MAX_ANSWER_BYTES + 1) });
      res.write('{"oneTimePrekeys":'); // then nothing: only the header can end this call
    });
    const err = await sdkError(relayHttp(s.url, new ManualClock()).keyCounts('d1'));
    expect(err.code).toBe('RELAY_PROTOCOL_ERROR');
    expect(err.message).toMatch(/larger than/);
  });

  it('ends a call with no answer at HTTP_REQUEST_TIMEOUT_MS (NETWORK_ERROR)', async () => {
    const s = await serve(() => undefined);
    const clock = new ManualClock();
    const call = sdkError(relayHttp(s.url, clock).keyCounts('d1'));
    await s.requested;
    clock.advance(HTTP_REQUEST_TIMEOUT_MS - 1);
    clock.advance(1);
    const err = await call;
    expect(err.code).toBe('NETWORK_ERROR');
    expect(err.message).toMatch(/no complete answer within/);
  });

  it('ends a call whose answer stalls halfway at HTTP_REQUEST_TIMEOUT_MS (NETWORK_ERROR)', async () => {
    const s = await serve((res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"oneTimePrekeys":');
    });
    const clock = new ManualClock();
    let answered!: () => void;
    const headers = new Promise<void>((r) => (answered = r));
    let settled = false;
    const call = sdkError(relayHttp(s.url, clock, answered).keyCounts('d1')).finally(() => (settled = true));
    // The status line and the first bytes have arrived; the call waits for the rest.
    await headers;
    expect(settled).toBe(false);
    clock.advance(HTTP_REQUEST_TIMEOUT_MS);
    const err = await call;
    expect(err.code).toBe('NETWORK_ERROR');
  });
});
