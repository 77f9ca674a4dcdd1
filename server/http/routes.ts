/**
 * The relay's HTTP surface: health, readiness, metrics (unless served on their own
 * listener), the key directory, the receipt log (log-routes.ts) and topics
 * (topic-routes.ts). docs/PROTOCOL.md documents each route.
 */
import type { TemplatedApp } from 'uWebSockets.js';
import { encodeBase64url } from '../../protocol/base64url.js';
import { parseJsonObject } from '../../protocol/decode.js';
import {
  type DeviceEntryAnswer,
  decodeDeviceEntryRequest,
  decodeDeviceId,
  decodeKeyUpload,
  encodeBundleAnswer,
  encodeDeviceListAnswer,
  encodeKeyCountsAnswer,
} from '../../protocol/directory.js';
import { ProtocolError } from '../../protocol/errors.js';
import { MAX_DEVICE_LIST_LENGTH, MAX_USER_ID_LENGTH, USER_ID_PATTERN } from '../../protocol/limits.js';
import type { DirectoryService } from '../directory/service.js';
import type { KeyCounts } from '../directory/store.js';
import { decodePathParam } from './context.js';
import { allowedOrigin, preflightHeaders } from './cors.js';
import { type LogRouteDeps, registerLogRoutes } from './log-routes.js';
import { type TopicRouteDeps, registerTopicRoutes } from './topic-routes.js';
import { metricsHandler, notFound } from './metrics-route.js';
import { type RouterDeps, createRouter } from './router.js';

export interface RouteDeps extends RouterDeps {
  readonly directory: DirectoryService;
  /** Resolves true when the database answers and migrations are applied. */
  readonly ready: () => Promise<boolean>;
  /** Whether GET /metrics is served on this (the main) listener. */
  readonly metricsHere: boolean;
  /** When set, GET /metrics requires `Authorization: Bearer <metricsToken>`. */
  readonly metricsToken: string | undefined;
  /** The receipt log (log-routes.ts). */
  readonly log: Omit<LogRouteDeps, 'directory' | 'userParam'>;
  /** Topics (topic-routes.ts). */
  readonly topics: Omit<TopicRouteDeps, 'metrics'>;
}

export function registerRoutes(app: TemplatedApp, deps: RouteDeps): void {
  const router = createRouter(deps);
  const { route, authUser } = router;

  const userParam = (raw: string): string => {
    const u = decodePathParam(raw, 'userId');
    if (u.length === 0 || u.length > MAX_USER_ID_LENGTH) throw new ProtocolError('BAD_REQUEST', 'userId: bad length');
    // The same form as a token's subject: no user can have another id.
    if (!USER_ID_PATTERN.test(u)) throw new ProtocolError('BAD_REQUEST', 'userId: must be printable ASCII without spaces');
    return u;
  };

  app.get('/healthz', (res) => {
    res.writeHeader('content-type', 'application/json').end('{"status":"ok"}');
  });

  app.get(
    '/readyz',
    route('readyz', 0, async (ex) => {
      const ok = !deps.isDraining() && (await deps.ready());
      ex.json(ok ? 200 : 503, { status: ok ? 'ready' : 'not ready' });
    }),
  );

  if (deps.metricsHere) app.get('/metrics', route('metrics', 0, metricsHandler(deps.metrics, deps.metricsToken)));

  app.post(
    '/v1/devices',
    route('append_device_entry', 0, async (ex) => {
      // Size-capped read first; the token is verified before the body is parsed.
      const [userId, text] = await Promise.all([authUser(ex), ex.readJsonText()]);
      const req = decodeDeviceEntryRequest(parseJsonObject(text));
      const r = await deps.directory.appendDeviceEntry(userId, req);
      const answer: DeviceEntryAnswer = { userId, seq: r.seq, kind: r.kind, deviceId: r.deviceId, created: r.outcome === 'created' };
      ex.json(answer.created ? 201 : 200, answer);
    }),
  );

  app.get(
    '/v1/users/:userId/devices',
    route('list_devices', 1, async (ex) => {
      await authUser(ex);
      const userId = userParam(ex.info.params[0] ?? '');
      const after = afterParam(ex.info.query);
      const list = await deps.directory.deviceList(userId, after);
      ex.json(200, encodeDeviceListAnswer({ ...list, devices: list.devices.map((d) => ({ deviceId: d.deviceId, identityKey: d.identityKey })) }));
    }),
  );

  app.put(
    '/v1/devices/:deviceId/keys',
    route('upload_keys', 1, async (ex) => {
      const [userId, text] = await Promise.all([authUser(ex), ex.readJsonText()]);
      const deviceId = decodeDeviceId(decodePathParam(ex.info.params[0] ?? '', 'deviceId'));
      const upload = decodeKeyUpload(parseJsonObject(text));
      ex.json(200, countsJson(await deps.directory.uploadKeys(userId, deviceId, upload)));
    }),
  );

  app.get(
    '/v1/devices/:deviceId/keys',
    route('count_keys', 1, async (ex) => {
      const userId = await authUser(ex);
      const deviceId = decodeDeviceId(decodePathParam(ex.info.params[0] ?? '', 'deviceId'));
      ex.json(200, countsJson(await deps.directory.countKeys(userId, deviceId)));
    }),
  );

  app.post(
    '/v1/users/:userId/devices/:deviceId/bundle',
    route('fetch_bundle', 2, async (ex) => {
      const requester = await authUser(ex);
      // The fetch is a POST because it consumes keys, not because it sends anything.
      ex.refuseBody();
      const userId = userParam(ex.info.params[0] ?? '');
      const deviceId = decodeDeviceId(decodePathParam(ex.info.params[1] ?? '', 'deviceId'));
      const b = await deps.directory.fetchBundle(requester, userId, deviceId);
      ex.json(200, encodeBundleAnswer(b));
    }),
  );

  registerLogRoutes(app, router, { ...deps.log, directory: deps.directory, userParam });
  registerTopicRoutes(app, router, { ...deps.topics, metrics: deps.metrics });

  // CORS preflight (server/http/cors.ts): answered for allowed origins, before any auth.
  app.options('/*', (res, req) => {
    const allowed = allowedOrigin(deps.cors, req.getHeader('origin'));
    res.cork(() => {
      res.writeStatus('204 No Content');
      if (allowed !== undefined) for (const [k, v] of preflightHeaders(allowed)) res.writeHeader(k, v);
      res.end();
    });
  });

  app.any('/*', route('not_found', 0, notFound));
}

/** `?after=N`: entries after position N (-1 or absent: the whole list). */
function afterParam(query: string): number {
  const raw = new URLSearchParams(query).get('after');
  if (raw === null) return -1;
  if (!/^(?:-1|0|[1-9]\d{0,8})$/.test(raw) || Number(raw) > MAX_DEVICE_LIST_LENGTH) {
    throw new ProtocolError('BAD_REQUEST', `after: must be an integer in -1..${MAX_DEVICE_LIST_LENGTH}`);
  }
  return Number(raw);
}

function countsJson(c: KeyCounts): Record<string, unknown> {
  return encodeKeyCountsAnswer(c);
}
