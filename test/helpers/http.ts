/**
 * HTTP client helpers for relay tests: JSON requests with fetch, and raw node:http
 * requests for what fetch cannot express (a declared Content-Length larger than what is
 * sent, a chunked body streamed until the relay answers, a WebSocket upgrade request).
 */
import http from 'node:http';
import net from 'node:net';
import { expect } from 'vitest';

export interface JsonResponse {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  /** The parsed body, or undefined when it is not JSON. */
  readonly body: any;
}

export async function request(
  baseUrl: string,
  method: string,
  path: string,
  opts: { token?: string; json?: unknown; body?: string; contentType?: string; headers?: Record<string, string> } = {},
): Promise<JsonResponse> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
  let body: string | undefined = opts.body;
  if (opts.json !== undefined) body = JSON.stringify(opts.json);
  if (body !== undefined) headers['content-type'] = opts.contentType ?? 'application/json';
  const res = await fetch(`${baseUrl}${path}`, { method, headers, ...(body !== undefined ? { body } : {}) });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: res.status, headers: res.headers, text, body: parsed };
}

/** The value of one Prometheus sample line (name plus exact label set), if present. */
export function metricSample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** Asserts a rejection: the HTTP status and the stable error code. */
export function expectError(res: JsonResponse, status: number, code: string): void {
  expect({ status: res.status, code: res.body?.error?.code }, res.text).toEqual({ status, code });
  expect(typeof res.body.error.message).toBe('string');
}

export interface RawResponse {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly text: string;
  readonly body: any;
  /** Request body bytes written before the response arrived. */
  readonly bytesSent: number;
}

/** Reads a node:http(s) response to its end; `body` is the parsed JSON, if it is JSON. */
export function collect(res: http.IncomingMessage, bytesSent: () => number = () => 0): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    let text = '';
    res.setEncoding('utf8');
    res.on('data', (d: string) => (text += d));
    res.on('error', reject);
    res.on('end', () => {
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        body = undefined;
      }
      resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body, bytesSent: bytesSent() });
    });
  });
}

/**
 * Sends `body` (one write, so headers and body leave together) under a declared
 * Content-Length that may be larger than the body, and waits for the answer without
 * ever completing the body.
 */
export function postDeclaredLength(
  baseUrl: string,
  path: string,
  opts: { token: string; declaredLength: number; body: string; method?: string },
): Promise<RawResponse> {
  const u = new URL(path, baseUrl);
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: u.hostname,
      port: u.port,
      method: opts.method ?? 'POST',
      path: u.pathname,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${opts.token}`, 'content-length': String(opts.declaredLength) },
    });
    let answered = false;
    req.on('response', (res) => {
      answered = true;
      collect(res, () => Buffer.byteLength(opts.body)).then(resolve, reject).finally(() => req.destroy());
    });
    req.on('error', (err) => {
      if (!answered) reject(err);
    });
    req.write(opts.body);
  });
}

/**
 * Streams a chunked body (no Content-Length) made of `chunk` repeated, until the relay
 * answers or `maxBytes` have been written (then the body is ended).
 */
export function postChunkedUntilAnswered(
  baseUrl: string,
  path: string,
  opts: { token: string; chunk: string; maxBytes: number; method?: string },
): Promise<RawResponse> {
  const u = new URL(path, baseUrl);
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: u.hostname,
      port: u.port,
      method: opts.method ?? 'POST',
      path: u.pathname,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${opts.token}`, 'transfer-encoding': 'chunked' },
    });
    let answered = false;
    let sent = 0;
    req.on('response', (res) => {
      answered = true;
      collect(res, () => sent).then(resolve, reject).finally(() => req.destroy());
    });
    req.on('error', (err) => {
      if (!answered) reject(err);
    });
    const pump = async (): Promise<void> => {
      while (!answered && sent < opts.maxBytes) {
        await new Promise<void>((r, j) => req.write(opts.chunk, (err) => (err ? j(err) : r())));
        sent += Buffer.byteLength(opts.chunk);
        // Give the relay a moment to answer before writing more, so that nothing is in
        // flight when it closes the connection.
        await new Promise((r) => setTimeout(r, 20));
      }
      if (!answered) req.end();
    };
    pump().catch((err: unknown) => {
      if (!answered) reject(err as Error);
    });
  });
}

/** A WebSocket upgrade request that is expected to be refused: returns the HTTP answer. */
export function refusedUpgrade(baseUrl: string, path: string): Promise<RawResponse> {
  const u = new URL(path, baseUrl);
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: u.hostname,
      port: u.port,
      method: 'GET',
      path: `${u.pathname}${u.search}`,
      headers: {
        connection: 'Upgrade',
        upgrade: 'websocket',
        'sec-websocket-version': '13',
        'sec-websocket-key': Buffer.from('0123456789abcdef').toString('base64'),
      },
    });
    req.on('upgrade', (_res, socket) => {
      socket.destroy();
      reject(new Error('the upgrade was accepted'));
    });
    req.on('response', (res) => collect(res, () => 0).then(resolve, reject));
    req.on('error', reject);
    req.end();
  });
}

export interface HeldRequest {
  /** Resolves with the answer once the relay has answered and closed the connection. */
  readonly answered: Promise<RawResponse & { closedByServer: boolean }>;
  /** Drops the connection (the relay sees the request aborted). */
  destroy(): void;
}

/**
 * Sends a request head declaring `declaredLength` body bytes and then only `body`, on a
 * plain TCP socket, and holds the connection open: the relay is left waiting for the
 * rest of the body. `answered` resolves when the relay answers and closes the
 * connection (`closedByServer`), or when the socket ends for another reason.
 */
export function holdRequest(baseUrl: string, opts: { method: string; path: string; token: string; declaredLength: number; body: string }): HeldRequest {
  const u = new URL(opts.path, baseUrl);
  const socket = net.connect(Number(u.port), u.hostname);
  let raw = '';
  let destroyed = false;
  socket.setEncoding('utf8');
  socket.on('connect', () => {
    socket.write(
      `${opts.method} ${u.pathname} HTTP/1.1\r\nHost: ${u.host}\r\nAuthorization: Bearer ${opts.token}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${opts.declaredLength}\r\n\r\n${opts.body}`,
    );
  });
  socket.on('data', (d: string) => (raw += d));
  const answered = new Promise<RawResponse & { closedByServer: boolean }>((resolve) => {
    const done = (closedByServer: boolean): void => {
      const [head = '', text = ''] = raw.split('\r\n\r\n', 2);
      const [statusLine = '', ...headerLines] = head.split('\r\n');
      const headers: http.IncomingHttpHeaders = {};
      for (const l of headerLines) {
        const i = l.indexOf(':');
        if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        body = undefined;
      }
      resolve({ status: Number(statusLine.split(' ')[1] ?? 0), headers, text, body, bytesSent: Buffer.byteLength(opts.body), closedByServer });
    };
    socket.on('end', () => done(!destroyed));
    socket.on('close', () => done(false));
    socket.on('error', () => done(false));
  });
  return {
    answered,
    destroy: () => {
      destroyed = true;
      socket.destroy();
    },
  };
}
