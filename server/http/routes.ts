/**
 * The relay's HTTP surface: health, readiness, metrics and the key directory.
 * docs/PROTOCOL.md documents each route.
 */
import type { HttpRequest, HttpResponse, TemplatedApp } from 'uWebSockets.js';
import type { Logger } from 'pino';
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
import { MAX_DEVICE_LIST_ENTRIES, MAX_USER_ID_LENGTH } from '../../protocol/limits.js';
import { type TokenVerifier, bearerToken } from '../auth/tokens.js';
import type { DirectoryService } from '../directory/service.js';
import type { KeyCounts } from '../directory/store.js';
import { MAX_INFLIGHT_HTTP } from '../limits.js';
import type { RelayMetrics } from '../metrics.js';
import { toProtocolError } from '../ws/connections.js';
import { HttpExchange, decodePathParam, refuseTokenInQuery, requestInfo } from './context.js';

export interface RouteDeps {
  readonly directory: DirectoryService;
  readonly verifier: TokenVerifier;
  readonly metrics: RelayMetrics;
  readonly logger: Logger;
  /** Resolves true when the database answers and migrations are applied. */
  readonly ready: () => Promise<boolean>;
  readonly isDraining: () => boolean;
  /** Tracks in-flight work so that shutdown can wait for it. */
  readonly track: <T>(p: Promise<T>) => Promise<T>;
}

type Handler = (ex: HttpExchange) => Promise<void>;

export function registerRoutes(app: TemplatedApp, deps: RouteDeps): void {
  let inflight = 0;

  const route = (name: string, paramCount: number, handler: Handler) => (res: HttpResponse, req: HttpRequest) => {
    const ex = new HttpExchange(res, requestInfo(req, paramCount));
    const finish = (): void => {
      deps.metrics.httpRequests.inc({ route: name, status: ex.done ? 'sent' : 'aborted' });
    };
    if (deps.isDraining()) {
      ex.error(new ProtocolError('UNAVAILABLE', 'the relay is shutting down'));
      return finish();
    }
    if (inflight >= MAX_INFLIGHT_HTTP) {
      ex.error(new ProtocolError('UNAVAILABLE', 'too many requests in flight'));
      return finish();
    }
    inflight++;
    void deps
      .track(
        (async () => {
          try {
            refuseTokenInQuery(ex.info.query);
            await handler(ex);
          } catch (err) {
            if (ex.aborted) return;
            const pe = toProtocolError(err, deps.logger);
            deps.metrics.errors.inc({ code: pe.code });
            ex.error(pe);
          }
        })(),
      )
      .finally(() => {
        inflight--;
        finish();
      });
  };

  const authUser = (ex: HttpExchange): Promise<string> => {
    const token = bearerToken(ex.info.authorization);
    if (token === undefined) return Promise.reject(new ProtocolError('UNAUTHENTICATED', 'an Authorization: Bearer token is required'));
    return deps.verifier.verify(token).then((t) => t.userId);
  };

  const userParam = (raw: string): string => {
    const u = decodePathParam(raw, 'userId');
    if (u.length === 0 || u.length > MAX_USER_ID_LENGTH) throw new ProtocolError('BAD_REQUEST', 'userId: bad length');
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

  app.get(
    '/metrics',
    route('metrics', 0, async (ex) => {
      const text = await deps.metrics.registry.metrics();
      ex.send(200, text, deps.metrics.registry.contentType);
    }),
  );

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
      const userId = userParam(ex.info.params[0] ?? '');
      const deviceId = decodeDeviceId(decodePathParam(ex.info.params[1] ?? '', 'deviceId'));
      const b = await deps.directory.fetchBundle(requester, userId, deviceId);
      ex.json(200, encodeBundleAnswer(b));
    }),
  );

  app.any(
    '/*',
    route('not_found', 0, async () => {
      throw new ProtocolError('NOT_FOUND', 'no such route');
    }),
  );
}

/** `?after=N`: entries after position N (-1 or absent: the whole list). */
function afterParam(query: string): number {
  const raw = new URLSearchParams(query).get('after');
  if (raw === null) return -1;
  if (!/^(?:-1|0|[1-9]\d{0,8})$/.test(raw) || Number(raw) > MAX_DEVICE_LIST_ENTRIES) {
    throw new ProtocolError('BAD_REQUEST', `after: must be an integer in -1..${MAX_DEVICE_LIST_ENTRIES}`);
  }
  return Number(raw);
}

function countsJson(c: KeyCounts): Record<string, unknown> {
  return encodeKeyCountsAnswer(c);
}
