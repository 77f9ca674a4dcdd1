/**
 * The request wrapper every HTTP route runs in: refuses new requests while draining or
 * past MAX_INFLIGHT_HTTP, turns any failure into a typed error answer, counts requests,
 * and gives routes `authUser`, which verifies the Bearer token and takes one of the
 * user's MAX_INFLIGHT_HTTP_PER_USER request slots (given back when the request ends).
 */
import type { HttpRequest, HttpResponse } from 'uWebSockets.js';
import type { Logger } from 'pino';
import type { TopicGrants } from '../topics/acl.js';
import { ProtocolError } from '../../protocol/errors.js';
import { type TokenVerifier, bearerToken } from '../auth/tokens.js';
import { MAX_INFLIGHT_HTTP, MAX_INFLIGHT_HTTP_PER_USER } from '../limits.js';
import type { RelayMetrics } from '../metrics.js';
import { toProtocolError } from '../ws/connections.js';
import { HttpExchange, refuseTokenInQuery, requestInfo } from './context.js';
import { type CorsPolicy, allowedOrigin } from './cors.js';

export interface RouterDeps {
  readonly verifier: TokenVerifier;
  readonly metrics: RelayMetrics;
  readonly logger: Logger;
  readonly isDraining: () => boolean;
  /** Tracks in-flight work so that shutdown can wait for it. */
  readonly track: <T>(p: Promise<T>) => Promise<T>;
  /** Time for a request body to arrive in full (HTTP_BODY_TIMEOUT_MS by default). */
  readonly bodyTimeoutMs: number;
  /** Which browser origins may read the answers (server/http/cors.ts). */
  readonly cors: CorsPolicy;
}

export type Handler = (ex: HttpExchange) => Promise<void>;

export interface Router {
  /** A uWS handler running `handler` for the route `name` with `paramCount` path parameters. */
  route(name: string, paramCount: number, handler: Handler): (res: HttpResponse, req: HttpRequest) => void;
  /** Verifies the request's token and takes one of its user's request slots. */
  authUser(ex: HttpExchange): Promise<string>;
  /** The same, answering the token's user and whether it holds the auditor claim. */
  authCaller(ex: HttpExchange): Promise<Caller>;
}

export interface Caller {
  readonly userId: string;
  /** The token carries the receipt log's auditor claim (server/auth/tokens.ts). */
  readonly auditor: boolean;
  /** What the token's topic claim allows (server/topics/acl.ts). */
  readonly topics: TopicGrants;
}

export function createRouter(deps: RouterDeps): Router {
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

  const route: Router['route'] = (name, paramCount, handler) => (res, req) => {
    const ex = new HttpExchange(res, requestInfo(req, paramCount), deps.bodyTimeoutMs);
    ex.corsOrigin = allowedOrigin(deps.cors, ex.info.origin);
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

  const authCaller: Router['authCaller'] = async (ex) => {
    const token = bearerToken(ex.info.authorization);
    if (token === undefined) throw new ProtocolError('UNAUTHENTICATED', 'an Authorization: Bearer token is required');
    const { userId, auditor, topics } = await deps.verifier.verify(token);
    // A request that already ended (its body refused while the token was verifying)
    // takes no slot: nothing would give it back.
    if (ex.finished) throw new ProtocolError('UNAVAILABLE', 'request already ended');
    takeUserSlot(ex, userId);
    return { userId, auditor, topics };
  };
  const authUser: Router['authUser'] = async (ex) => (await authCaller(ex)).userId;

  return { route, authUser, authCaller };
}
