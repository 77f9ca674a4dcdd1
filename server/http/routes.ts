/**
 * The relay's HTTP surface: health, readiness, metrics and the key directory.
 * docs/PROTOCOL.md documents each route.
 */
import type { HttpRequest, HttpResponse, TemplatedApp } from 'uWebSockets.js';
import type { Logger } from 'pino';
import { encodeBase64url } from '../../protocol/base64url.js';
import { parseJsonObject } from '../../protocol/decode.js';
import { decodeDeviceId, decodeKeyUpload, decodeRegisterDevice, encodeSignedKey } from '../../protocol/directory.js';
import { ProtocolError } from '../../protocol/errors.js';
import { MAX_USER_ID_LENGTH, USER_ID_PATTERN } from '../../protocol/limits.js';
import { type TokenVerifier, bearerToken } from '../auth/tokens.js';
import type { DirectoryService } from '../directory/service.js';
import type { KeyCounts } from '../directory/store.js';
import { MAX_INFLIGHT_HTTP, MAX_INFLIGHT_HTTP_PER_USER } from '../limits.js';
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
  /** Time for a request body to arrive in full (HTTP_BODY_TIMEOUT_MS by default). */
  readonly bodyTimeoutMs: number;
}

type Handler = (ex: HttpExchange) => Promise<void>;

export function registerRoutes(app: TemplatedApp, deps: RouteDeps): void {
  let inflight = 0;
  /** Requests in flight per user whose token has verified; entries at zero are removed. */
  const inflightByUser = new Map<string, number>();
  const userSlots = new WeakMap<HttpExchange, string>();

  const takeUserSlot = (ex: HttpExchange, userId: string): void => {
    const n = inflightByUser.get(userId) ?? 0;
    if (n >= MAX_INFLIGHT_HTTP_PER_USER) {
      throw new ProtocolError('RATE_LIMITED', `more than ${MAX_INFLIGHT_HTTP_PER_USER} requests of this user in flight`);
    }
    inflightByUser.set(userId, n + 1);
    userSlots.set(ex, userId);
  };
  const releaseUserSlot = (ex: HttpExchange): void => {
    const userId = userSlots.get(ex);
    if (userId === undefined) return;
    const n = (inflightByUser.get(userId) ?? 1) - 1;
    if (n > 0) inflightByUser.set(userId, n);
    else inflightByUser.delete(userId);
  };

  const route = (name: string, paramCount: number, handler: Handler) => (res: HttpResponse, req: HttpRequest) => {
    const ex = new HttpExchange(res, requestInfo(req, paramCount), deps.bodyTimeoutMs);
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
    deps.metrics.httpInFlight.inc();
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
        ex.finished = true;
        inflight--;
        deps.metrics.httpInFlight.dec();
        releaseUserSlot(ex);
        finish();
      });
  };

  /** Verifies the request's token and takes one of its user's request slots. */
  const authUser = async (ex: HttpExchange): Promise<string> => {
    const token = bearerToken(ex.info.authorization);
    if (token === undefined) throw new ProtocolError('UNAUTHENTICATED', 'an Authorization: Bearer token is required');
    const userId = await deps.verifier.verify(token);
    // A request that already ended (its body refused while the token was verifying)
    // takes no slot: nothing would give it back.
    if (ex.finished) throw new ProtocolError('UNAVAILABLE', 'request already ended');
    takeUserSlot(ex, userId);
    return userId;
  };

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

  app.get(
    '/metrics',
    route('metrics', 0, async (ex) => {
      const text = await deps.metrics.registry.metrics();
      ex.send(200, text, deps.metrics.registry.contentType);
    }),
  );

  app.post(
    '/v1/devices',
    route('register_device', 0, async (ex) => {
      // Size-capped read first; the token is verified before the body is parsed.
      const [userId, text] = await Promise.all([authUser(ex), ex.readJsonText()]);
      const req = decodeRegisterDevice(parseJsonObject(text));
      const outcome = await deps.directory.registerDevice(userId, req);
      ex.json(outcome === 'created' ? 201 : 200, { userId, deviceId: req.deviceId, created: outcome === 'created' });
    }),
  );

  app.get(
    '/v1/users/:userId/devices',
    route('list_devices', 1, async (ex) => {
      await authUser(ex);
      const userId = userParam(ex.info.params[0] ?? '');
      const devices = await deps.directory.listDevices(userId);
      ex.json(200, {
        userId,
        devices: devices.map((d) => ({ deviceId: d.deviceId, identityKey: encodeBase64url(d.identityKey), createdAt: d.createdAt.toISOString() })),
      });
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
      ex.json(200, {
        userId: b.userId,
        deviceId: b.deviceId,
        identityKey: encodeBase64url(b.identityKey),
        signedPrekey: encodeSignedKey(b.signedPrekey),
        ...(b.oneTimePrekey ? { oneTimePrekey: encodeSignedKey(b.oneTimePrekey) } : {}),
        kemPrekey: encodeSignedKey(b.kemPrekey),
        kemLastResort: b.kemLastResort,
      });
    }),
  );

  app.any(
    '/*',
    route('not_found', 0, async () => {
      throw new ProtocolError('NOT_FOUND', 'no such route');
    }),
  );
}

function countsJson(c: KeyCounts): Record<string, number | boolean> {
  return { ...c };
}
