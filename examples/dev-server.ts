/**
 * A small development web server for pages that use hermetic/client: it serves a fixed set
 * of files and forwards everything under /v1/ (HTTP routes and the WebSocket) to a relay,
 * so the page and the relay share one origin.
 *
 * Why forward: the relay answers no CORS preflight, so a page on another origin cannot
 * make the SDK's HTTP calls to it (they carry an Authorization header). In production the
 * same is done by the reverse proxy in front of the app and the relay. The Host header is
 * passed through unchanged: devices sign the origin they connect to, and the relay (with
 * no HERMETIC_PUBLIC_URL) accepts the Host it was reached at.
 */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
};

/** A route of its own: answers JSON. */
export type JsonRoute = (query: URLSearchParams) => Promise<{ status: number; body: unknown }>;

export interface DevServerOptions {
  /** The relay to forward /v1/ to: http://host:port. */
  readonly relay: string;
  /** URL path -> file served at it (read on each request). */
  readonly files: Readonly<Record<string, string>>;
  /** URL path -> GET route answering JSON. */
  readonly routes?: Readonly<Record<string, JsonRoute>>;
  readonly host?: string;
  /** 0 (the default): any free port. */
  readonly port?: number;
}

export interface DevServer {
  /** http://host:port */
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

export async function startDevServer(opts: DevServerOptions): Promise<DevServer> {
  const relay = new URL(opts.relay);
  const relayPort = Number(relay.port || 80);
  const sockets = new Set<net.Socket>();

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname.startsWith('/v1/')) return forward(req, res);
    const route = opts.routes?.[url.pathname];
    if (route && req.method === 'GET') {
      route(url.searchParams).then(
        ({ status, body }) => send(res, status, 'application/json; charset=utf-8', JSON.stringify(body)),
        (err: unknown) => send(res, 500, 'application/json; charset=utf-8', JSON.stringify({ error: (err as Error).message })),
      );
      return;
    }
    const file = opts.files[url.pathname];
    if (file === undefined || req.method !== 'GET') return send(res, 404, 'text/plain; charset=utf-8', 'not found\n');
    fs.readFile(file, (err, data) => {
      if (err) return send(res, 404, 'text/plain; charset=utf-8', 'not found\n');
      send(res, 200, CONTENT_TYPES[path.extname(file)] ?? 'application/octet-stream', data);
    });
  });

  const forward = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const upstream = http.request({ host: relay.hostname, port: relayPort, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => {
      if (!res.headersSent) send(res, 502, 'text/plain; charset=utf-8', 'relay unreachable\n');
      else res.destroy();
    });
    req.pipe(upstream);
  };

  // A WebSocket upgrade is passed on byte for byte: the request head as received, then
  // both directions piped until either side closes.
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    if (!(req.url ?? '').startsWith('/v1/')) return socket.destroy();
    const upstream = net.connect(relayPort, relay.hostname, () => {
      let lines = `${req.method} ${req.url} HTTP/${req.httpVersion}\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      upstream.write(`${lines}\r\n`);
      if (head.length > 0) upstream.write(head);
      socket.pipe(upstream).pipe(socket);
    });
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    upstream.on('error', () => socket.destroy());
    socket.on('error', () => upstream.destroy());
    socket.on('close', () => upstream.destroy());
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  const host = opts.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

function send(res: http.ServerResponse, status: number, type: string, body: string | Buffer): void {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}
