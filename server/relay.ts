/**
 * The relay process: opens storage (PostgreSQL when DATABASE_URL is set, else embedded
 * PGlite in the data directory), applies migrations, and serves HTTP and WebSocket on
 * uWebSockets.js until stopped. `stop()` is the graceful shutdown: stop accepting, wait
 * for in-flight work, close sockets with GOING_AWAY, close storage.
 */
import type { Logger } from 'pino';
import type { us_listen_socket } from 'uWebSockets.js';
import type { JWTVerifyGetKey } from 'jose';
import { defaultBackend } from '../crypto/primitives/index.js';
import { systemRandom } from '../crypto/primitives/random.js';
import { CLOSE_CODES } from '../protocol/errors.js';
import { MAX_FRAME_BYTES } from '../protocol/limits.js';
import { relayOrigin } from '../protocol/origin.js';
import { openDevIssuer } from './auth/dev-issuer.js';
import { createTokenVerifier, keySetFromConfig } from './auth/tokens.js';
import type { Config } from './config.js';
import { DirectoryService } from './directory/service.js';
import { DirectoryStore } from './directory/store.js';
import { registerRoutes } from './http/routes.js';
import { type RelayMetrics, createMetrics } from './metrics.js';
import type { Database } from './storage/database.js';
import { loadMigrations, migrate, migrationsCurrent } from './storage/migrate.js';
import { openPg } from './storage/pg.js';
import { openPglite } from './storage/pglite.js';
import { READY_CHECK_TIMEOUT_MS } from './limits.js';
import { uws, uwsBinding } from './uws.js';
import { type ConnectionData, ConnectionManager } from './ws/connections.js';
import { MailboxService } from './mailbox/service.js';
import { MailboxStore } from './mailbox/store.js';

export interface Relay {
  readonly port: number;
  readonly db: Database;
  readonly metrics: RelayMetrics;
  readonly nodeId: string;
  stop(): Promise<void>;
}

export async function openDatabase(config: Config, logger: Logger, observe?: (s: number) => void): Promise<Database> {
  if (config.databaseUrl) {
    return openPg({
      connectionString: config.databaseUrl,
      maxConnections: config.dbPoolMax,
      timeoutMs: config.dbTimeoutMs,
      logger,
      ...(observe ? { observe } : {}),
    });
  }
  return openPglite({ dataDir: config.dataDir, ...(observe ? { observe } : {}) });
}

/**
 * The origins a device may sign on a connection: the configured public origin or, when
 * none is configured (development), the Host the client connected to, with either
 * WebSocket scheme (the relay can't tell whether a proxy in front terminated TLS).
 */
export function acceptedOrigins(publicOrigin: string | undefined, host: string): readonly string[] {
  if (publicOrigin !== undefined) return [publicOrigin];
  const origins: string[] = [];
  for (const scheme of ['ws', 'wss']) {
    const o = relayOrigin(`${scheme}://${host}`);
    if (o !== undefined) origins.push(o);
  }
  return origins;
}

export async function startRelay(config: Config, logger: Logger): Promise<Relay> {
  const binding = uwsBinding();
  if (binding.native) logger.info({ binding: binding.detail }, 'uWebSockets.js native binding loaded');
  else logger.warn({ binding: binding.detail }, 'uWebSockets.js is running on its slow JS fallback');

  const metrics = createMetrics();
  const db = await openDatabase(config, logger, (s) => metrics.dbQuerySeconds.observe(s));
  try {
    const migrations = loadMigrations();
    const result = await migrate(db, migrations);
    logger.info({ driver: db.driver, applied: result.applied, version: result.current }, 'storage ready');

    let keySet: JWTVerifyGetKey;
    if (config.auth.mode === 'dev') {
      const issuer = await openDevIssuer(config.dataDir);
      keySet = issuer.keySet;
      logger.warn(
        { keyFile: issuer.keyFile },
        'DEV MODE: no JWKS configured; the relay trusts tokens signed by its own dev key (mint with `hermetic token <user>`). Never use this in production.',
      );
    } else {
      keySet = keySetFromConfig(config.auth);
    }
    const verifier = createTokenVerifier(config.auth, keySet);
    const backend = defaultBackend;
    const store = new DirectoryStore(db);
    const directory = new DirectoryService(store, backend);

    let draining = false;
    const inflight = new Set<Promise<unknown>>();
    const track = <T>(p: Promise<T>): Promise<T> => {
      inflight.add(p);
      void p.finally(() => inflight.delete(p)).catch(() => undefined);
      return p;
    };

    const nodeId = Buffer.from(systemRandom(8)).toString('hex');
    const mailbox = new MailboxService({
      db,
      store: new MailboxStore(db, nodeId),
      nodeId,
      logger,
      onBatch: (n) => metrics.sendBatchSize.observe(n),
      onNotice: () => metrics.notices.inc(),
      onResubscribed: () => metrics.listenReconnects.inc(),
    });
    await mailbox.start();
    const connections = new ConnectionManager({ verifier, directory: store, backend, metrics, logger, random: systemRandom, mailbox, now: Date.now });
    const app = uws.App();
    app.ws<ConnectionData>('/v1/ws', {
      // uWS closes the socket on anything above this; between MAX_FRAME_BYTES and this the
      // relay answers FRAME_TOO_LARGE and keeps the connection.
      maxPayloadLength: 2 * MAX_FRAME_BYTES,
      idleTimeout: config.wsIdleTimeoutSec,
      sendPingsAutomatically: true,
      // Delivery pauses at SOCKET_BUFFER_HIGH_WATER; a peer that still lets its buffer
      // reach this (by never reading its answers) is disconnected rather than having
      // frames dropped. Its envelopes stay stored and are delivered on reconnect.
      maxBackpressure: 4 * 1024 * 1024,
      closeOnBackpressureLimit: 1,
      upgrade: (res, req, context) => {
        const query = req.getQuery() ?? '';
        if (/(?:^|&)(?:access_token|token|jwt|authorization)=/i.test(query)) {
          res.writeStatus('400 Bad Request').writeHeader('content-type', 'application/json');
          res.end(JSON.stringify({ error: { code: 'TOKEN_IN_QUERY', message: 'credentials are never accepted in a URL' } }));
          metrics.errors.inc({ code: 'TOKEN_IN_QUERY' });
          return;
        }
        if (draining) {
          res.writeStatus('503 Service Unavailable').end();
          return;
        }
        res.upgrade(
          connections.newConnectionData(acceptedOrigins(config.publicOrigin, req.getHeader('host'))),
          req.getHeader('sec-websocket-key'),
          req.getHeader('sec-websocket-protocol'),
          req.getHeader('sec-websocket-extensions'),
          context,
        );
      },
      open: (ws) => connections.onOpen(ws),
      message: (ws, message, isBinary) => connections.onMessage(ws, message, isBinary),
      drain: (ws) => connections.onDrain(ws),
      close: (ws) => connections.onClose(ws),
    });
    registerRoutes(app, {
      directory,
      verifier,
      metrics,
      logger,
      ready: async () => migrationsCurrent(db, migrations.length, READY_CHECK_TIMEOUT_MS),
      isDraining: () => draining,
      track,
    });

    const listenSocket = await new Promise<us_listen_socket>((resolve, reject) => {
      app.listen(config.host, config.port, (s) => (s ? resolve(s) : reject(new Error(`cannot listen on ${config.host}:${config.port}`))));
    });
    const port = uws.us_socket_local_port(listenSocket as unknown as Parameters<typeof uws.us_socket_local_port>[0]);
    logger.info({ host: config.host, port, storage: db.driver, auth: config.auth.mode }, 'relay listening');

    let stopping: Promise<void> | undefined;
    const stop = (): Promise<void> => {
      stopping ??= (async () => {
        draining = true;
        uws.us_listen_socket_close(listenSocket);
        const grace = new Promise<void>((r) => setTimeout(r, config.shutdownGraceMs).unref());
        // Finish in-flight database writes (queued SENDs are committed and answered).
        await Promise.race([Promise.allSettled([...inflight, mailbox.stop()]), grace]);
        connections.closeAll(CLOSE_CODES.GOING_AWAY, 'relay shutting down');
        await db.close();
        logger.info('relay stopped');
      })();
      return stopping;
    };
    return { port, db, metrics, nodeId, stop };
  } catch (err) {
    await db.close().catch(() => undefined);
    throw err;
  }
}
