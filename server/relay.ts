/**
 * The relay process: opens storage (PostgreSQL when DATABASE_URL is set, else embedded
 * PGlite in the data directory), applies migrations, and serves HTTP and WebSocket on
 * uWebSockets.js until stopped. `stop()` is the graceful shutdown: stop accepting, wait
 * for in-flight work, close sockets with GOING_AWAY, close storage.
 */
import type { Logger } from 'pino';
import type { TemplatedApp, us_listen_socket } from 'uWebSockets.js';
import type { JWTVerifyGetKey } from 'jose';
import { defaultBackend } from '../crypto/primitives/index.js';
import { systemRandom } from '../crypto/primitives/random.js';
import { CLOSE_CODES, ProtocolError } from '../protocol/errors.js';
import { MAX_FRAME_BYTES } from '../protocol/limits.js';
import { relayOrigin } from '../protocol/origin.js';
import { openDevIssuer } from './auth/dev-issuer.js';
import { createTokenVerifier, keySetFromConfig } from './auth/tokens.js';
import type { Config } from './config.js';
import { DirectoryService } from './directory/service.js';
import { DirectoryStore } from './directory/store.js';
import { connectionCap, readFdLimit } from './fd-limit.js';
import { refuseTokenInQuery, refuseUpgrade } from './http/context.js';
import { registerMetricsListener } from './http/metrics-route.js';
import { registerRoutes } from './http/routes.js';
import { type RelayMetrics, createMetrics } from './metrics.js';
import type { Database } from './storage/database.js';
import { loadMigrations, migrate, migrationsCurrent } from './storage/migrate.js';
import { openPg } from './storage/pg.js';
import { openPglite } from './storage/pglite.js';
import { UnsupportedRuntimeError, relayRuntimeProblem } from './runtime.js';
import { checkTlsFiles, sslAppOptions } from './tls.js';
import { currentRelayRuntime, uws } from './uws.js';
import { Admission, type RefusalReason, addressKey } from './ws/admission.js';
import { READY_CHECK_TIMEOUT_MS } from './limits.js';
import { type ConnectionData, ConnectionManager } from './ws/connections.js';
import { MailboxService } from './mailbox/service.js';
import { ConsumerHub } from './topics/consumers.js';
import { GroupStore } from './topics/groups.js';
import { TopicHub } from './topics/hub.js';
import { TopicService } from './topics/service.js';
import { TopicStore } from './topics/store.js';
import { loadLogKey } from './log/log-key.js';
import { ReceiptLog } from './log/service.js';
import { MailboxStore } from './mailbox/store.js';
import { PendingSends } from './ws/pending-sends.js';
import { type Notifier, type NotifierKind, type NotifierObserver, PgNotifier } from './fleet/notifier.js';
import { MAILBOX_CHANNEL } from './fleet/notice.js';

export interface Relay {
  readonly port: number;
  readonly db: Database;
  readonly metrics: RelayMetrics;
  readonly nodeId: string;
  /** The metrics listener's port, when HERMETIC_METRICS_PORT is set. */
  readonly metricsPort: number | undefined;
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
  const runtime = currentRelayRuntime();
  const problem = relayRuntimeProblem(runtime);
  if (problem) throw new UnsupportedRuntimeError(problem);
  logger.info({ binding: runtime.bindingDetail, node: runtime.nodeVersion }, 'uWebSockets.js native binding loaded');
  const tlsFiles = config.tls ? checkTlsFiles(config.tls) : undefined;
  // With TLS every listener (the main one and the metrics one) speaks TLS.
  const newApp = (): TemplatedApp => (tlsFiles ? uws.SSLApp(sslAppOptions(tlsFiles)) : uws.App());
  const cap = connectionCap({ configured: config.maxConnections, dbPoolMax: config.dbPoolMax, fdLimit: readFdLimit() });
  if (cap.fdLimit === undefined) {
    logger.warn({ maxConnections: cap.maxConnections }, 'cannot read the file descriptor limit; set HERMETIC_MAX_CONNECTIONS to size the connection cap');
  }

  const metrics = createMetrics();
  const db = await openDatabase(config, logger, (s) => metrics.dbQuerySeconds.observe(s));
  const listeners: us_listen_socket[] = [];
  let notifier: Notifier | undefined;
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
    const nodeId = Buffer.from(systemRandom(8)).toString('hex');
    notifier = await openNotifier(config, db, nodeId, logger, metrics);
    const store = new DirectoryStore(db, notifier, (err) =>
      logger.warn({ err: { message: (err as Error).message } }, 'revoked notice failed (catch-up scans close the connection)'),
    );
    const directory = new DirectoryService(store, backend, {
      handout: config.prekeyHandout,
      onWithheld: (kind, reason) => metrics.oneTimePrekeysWithheld.inc({ kind, reason }),
    });

    let draining = false;
    const inflight = new Set<Promise<unknown>>();
    const track = <T>(p: Promise<T>): Promise<T> => {
      inflight.add(p);
      void p.finally(() => inflight.delete(p)).catch(() => undefined);
      return p;
    };

    const topics = new TopicService(new TopicStore(db), {
      logger,
      onRetired: (r) => {
        metrics.topicSlicesRetired.inc({ kind: 'dropped' }, r.dropped);
        metrics.topicSlicesRetired.inc({ kind: 'deferred' }, r.deferred);
      },
    });
    topics.start();
    // Other relays' subscribers of a topic read what this one committed (and hear of resets).
    const bus = notifier;
    // One notice per topic per turn of the event loop, however many commits it had (on
    // NOTIFY, each notice is a statement and serialises commits).
    const heads = new Map<string, { epoch: number; head: number }>();
    const topicNotice = (topic: string, epoch: number, head: number): void => {
      const h = heads.get(topic);
      if (h && (h.epoch > epoch || (h.epoch === epoch && h.head >= head))) return;
      if (heads.size === 0) setImmediate(sendTopicNotices);
      heads.set(topic, { epoch, head });
    };
    const sendTopicNotices = (): void => {
      for (const [topic, { epoch, head }] of heads) {
        bus.publish({ node: nodeId, kind: 'topic', topic, epoch, head }).catch((err: unknown) => {
          logger.warn({ topic, err: { message: (err as Error).message } }, 'topic notice not sent (other relays see the messages at their next notice)');
        });
      }
      heads.clear();
    };
    // uWS's native publish, bound once the app exists (below).
    let broadcast: (channel: string, text: string) => void = () => undefined;
    const topicHub = new TopicHub({
      store: topics.store,
      logger,
      broadcast: (channel, text) => broadcast(channel, text),
      onPaused: () => metrics.topicSubscriberPauses.inc(),
      onCommitted: (topic, epoch, head) => topicNotice(topic, epoch, head),
      onHead: (topic, epoch) => consumers.topicHead(topic, epoch),
    });
    metrics.setTopicGauges(() => ({ subscriptions: topicHub.subscriptions, pendingPublishes: topicHub.pendingPublishes }));
    const groups = new GroupStore(db, topics.store);
    const consumers = new ConsumerHub({
      groups,
      logger,
      nodeId,
      onDeadLettered: (h, count) => {
        metrics.groupDeadLettered.inc(count);
        // Its subscribers here and elsewhere read it like any commit.
        topicHub.remoteHead(h.topic, h.epoch, h.head);
        topicNotice(h.topic, h.epoch, h.head);
      },
      onSkipped: (count) => metrics.groupSkipped.inc(count),
      onReleased: (topic, epoch, head) => topicNotice(topic, epoch, head),
    });
    const mailbox = new MailboxService({
      db,
      notifier,
      store: new MailboxStore(db, nodeId, {
        quota: { maxBytes: config.mailboxMaxBytes, maxEnvelopes: config.mailboxMaxEnvelopes },
        retention: { retirementAgeMs: config.retirementAgeMs, receiptWindowMs: config.receiptWindowMs },
        // NOTIFY from inside the storing transaction only when that is the bus.
        channel: notifier.transactional ? MAILBOX_CHANNEL : null,
      }),
      nodeId,
      logger,
      onBatch: (n) => metrics.sendBatchSize.observe(n),
      onNotice: () => metrics.notices.inc(),
      onTopicNotice: (n) => topicHub.remoteHead(n.topic, n.epoch, n.head),
      onResubscribed: () => {
        metrics.listenReconnects.inc();
        topicHub.refresh();
      },
      onCatchUp: (reason) => metrics.catchupRuns.inc({ reason }),
      onRetired: (r) => {
        metrics.retired.inc({ kind: 'partition' }, r.partitions);
        metrics.retired.inc({ kind: 'carried' }, r.carried);
        metrics.retired.inc({ kind: 'expired' }, r.expired);
        if (r.deferred) metrics.retired.inc({ kind: 'drop_deferred' });
        if (r.drainFailed) metrics.retired.inc({ kind: 'drain_failed' });
      },
      onCatchUpPage: (checked, found) => {
        metrics.catchupChecked.inc(checked);
        metrics.catchupFound.inc(found);
      },
    });
    await mailbox.start();
    const logKey = loadLogKey({ signerKey: config.log.signerKey, origin: config.log.origin, dataDir: config.dataDir });
    if (logKey.source === 'generated') {
      logger.warn(
        { keyFile: logKey.keyFile, verifierKey: logKey.signer.verifier.toString() },
        'no HERMETIC_LOG_KEY: generated a receipt log key in the data directory. Relays sharing a database must all be given the same HERMETIC_LOG_KEY.',
      );
    }
    const receiptLog = new ReceiptLog({
      db,
      backend,
      key: logKey,
      now: Date.now,
      logger,
      metrics,
      checkpointIntervalMs: config.log.checkpointIntervalMs,
    });
    await receiptLog.start();
    const admission = new Admission(
      { maxConnections: cap.maxConnections, maxUnauthenticatedPerAddress: config.maxUnauthenticatedPerAddress },
      metrics.connectionsUnauthenticated,
    );
    metrics.connectionsMax.set(cap.maxConnections);
    const pending = PendingSends.defaults(config.maxPendingSendBytes);
    metrics.setPendingSendBytes(() => pending.totalBytes);
    const connections = new ConnectionManager({
      verifier,
      directory: store,
      backend,
      metrics,
      logger,
      random: systemRandom,
      mailbox,
      topics: topicHub,
      consumers,
      admission,
      pending,
      authTimeoutMs: config.authTimeoutMs,
      now: Date.now,
    });
    // Every connection keeps the origins it may sign for: the connections of one Host share
    // one array (the last Host's, memoized) rather than each keeping a copy.
    let lastHost: string | undefined;
    let lastOrigins: readonly string[] = [];
    const originsFor = (host: string): readonly string[] => {
      if (host !== lastHost) {
        lastOrigins = acceptedOrigins(config.publicOrigin, host);
        lastHost = host;
      }
      return lastOrigins;
    };
    const app = newApp();
    broadcast = (channel, text) => void app.publish(channel, text, false);
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
        const refuse = (err: ProtocolError, reason?: 'draining' | RefusalReason): void => {
          refuseUpgrade(res, err);
          metrics.errors.inc({ code: err.code });
          if (reason) metrics.connectionsRefused.inc({ reason });
        };
        try {
          refuseTokenInQuery(req.getQuery() ?? '');
        } catch (err) {
          refuse(err as ProtocolError);
          return;
        }
        if (draining) {
          refuse(new ProtocolError('UNAVAILABLE', 'the relay is shutting down'), 'draining');
          return;
        }
        const address = addressKey(res.getRemoteAddress());
        const refusal = admission.check(address);
        if (refusal) {
          refuse(refusal.error, refusal.reason);
          return;
        }
        res.upgrade(
          connections.newConnectionData(address, originsFor(req.getHeader('host'))),
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
    const routerDeps = { verifier, metrics, logger, isDraining: () => draining, track, bodyTimeoutMs: config.httpBodyTimeoutMs, cors: config.cors };
    // /metrics: on a listener of its own when HERMETIC_METRICS_PORT is set; else on the
    // main port, open in development, and in production only behind a token.
    const metricsHere = config.metrics.port === undefined && (config.metrics.token !== undefined || !config.production);
    if (config.metrics.port === undefined && !metricsHere) {
      logger.warn('GET /metrics is not served: in production set HERMETIC_METRICS_TOKEN or HERMETIC_METRICS_PORT to expose it');
    }
    registerRoutes(app, {
      ...routerDeps,
      directory,
      ready: async () => migrationsCurrent(db, migrations.length, READY_CHECK_TIMEOUT_MS),
      metricsHere,
      metricsToken: config.metrics.token,
      log: { log: receiptLog, key: logKey, backend },
      topics: {
        topics: topics.store,
        groups,
        onReset: (topic, epoch) => {
          topicHub.topicReset(topic, epoch);
          consumers.topicHead(topic, epoch);
          topicNotice(topic, epoch, 1);
        },
        onGroupDeleted: (topic, epoch, head) => {
          consumers.topicHead(topic, epoch);
          topicNotice(topic, epoch, head);
        },
      },
    });

    const main = await listen(app, config.host, config.port);
    listeners.push(main.socket);
    let metricsPort: number | undefined;
    if (config.metrics.port !== undefined) {
      const metricsApp = newApp();
      registerMetricsListener(metricsApp, { ...routerDeps, metricsToken: config.metrics.token });
      const m = await listen(metricsApp, config.metrics.host, config.metrics.port);
      listeners.push(m.socket);
      metricsPort = m.port;
    }
    const port = main.port;
    logger.info(
      {
        host: config.host,
        port,
        storage: db.driver,
        auth: config.auth.mode,
        maxConnections: cap.maxConnections,
        fdLimit: cap.fdLimit ?? null,
        metrics: metricsPort !== undefined ? { host: config.metrics.host, port: metricsPort } : metricsHere ? 'main' : 'off',
        metricsToken: config.metrics.token !== undefined,
        tls: tlsFiles ? { certFile: tlsFiles.certFile, validTo: tlsFiles.validTo } : false,
        log: { origin: logKey.origin, verifierKey: logKey.signer.verifier.toString(), key: logKey.source },
      },
      'relay listening',
    );

    let stopping: Promise<void> | undefined;
    const stop = (): Promise<void> => {
      stopping ??= (async () => {
        draining = true;
        for (const l of listeners) uws.us_listen_socket_close(l);
        const grace = new Promise<void>((r) => setTimeout(r, config.shutdownGraceMs).unref());
        // Finish in-flight database writes (queued SENDs and topic publishes are committed
        // and answered).
        await Promise.race([Promise.allSettled([...inflight, mailbox.stop(), receiptLog.stop(), topics.stop(), topicHub.settle()]), grace]);
        consumers.stopAll();
        connections.closeAll(CLOSE_CODES.GOING_AWAY, 'relay shutting down');
        await notifier?.close().catch(() => undefined);
        await db.close();
        logger.info('relay stopped');
      })();
      return stopping;
    };
    return { port, db, metrics, nodeId, metricsPort, stop };
  } catch (err) {
    for (const l of listeners) uws.us_listen_socket_close(l);
    await notifier?.close().catch(() => undefined);
    await db.close().catch(() => undefined);
    throw err;
  }
}

/** Counts a notifier's traffic in the relay's metrics. */
function notifierObserver(kind: NotifierKind, metrics: RelayMetrics): NotifierObserver {
  return {
    published: (k) => metrics.noticesPublished.inc({ notifier: kind, kind: k }),
    received: (k) => metrics.noticesReceived.inc({ notifier: kind, kind: k }),
    malformed: () => metrics.noticesMalformed.inc({ notifier: kind }),
    resubscribed: () => metrics.notifierResubscriptions.inc({ notifier: kind }),
  };
}

/** The bus relays wake each other on: NATS with HERMETIC_NATS_URL, else PostgreSQL NOTIFY. */
async function openNotifier(config: Config, db: Database, nodeId: string, logger: Logger, metrics: RelayMetrics): Promise<Notifier> {
  if (!config.nats) return new PgNotifier(db, notifierObserver('pg', metrics));
  // Loaded only when used.
  const { NatsNotifier } = await import('./fleet/nats-notifier.js');
  return NatsNotifier.connect({
    url: config.nats.url,
    subjectPrefix: config.nats.subjectPrefix,
    ...(config.nats.credsFile ? { credsFile: config.nats.credsFile } : {}),
    name: `hermetic-relay-${nodeId}`,
    logger,
    observer: notifierObserver('nats', metrics),
  });
}

async function listen(app: TemplatedApp, host: string, port: number): Promise<{ socket: us_listen_socket; port: number }> {
  const socket = await new Promise<us_listen_socket>((resolve, reject) => {
    app.listen(host, port, (s) => (s ? resolve(s) : reject(new Error(`cannot listen on ${host}:${port}`))));
  });
  return { socket, port: uws.us_socket_local_port(socket as unknown as Parameters<typeof uws.us_socket_local_port>[0]) };
}
