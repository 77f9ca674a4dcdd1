/**
 * GET /metrics (Prometheus text), on the main listener or on a listener of its own
 * (HERMETIC_METRICS_PORT), optionally behind a static bearer token
 * (HERMETIC_METRICS_TOKEN) compared in constant time.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { TemplatedApp } from 'uWebSockets.js';
import { ProtocolError } from '../../protocol/errors.js';
import { bearerToken } from '../auth/tokens.js';
import type { RelayMetrics } from '../metrics.js';
import type { HttpExchange } from './context.js';
import { type Handler, type RouterDeps, createRouter } from './router.js';

/** Whether `presented` is `expected`, in time independent of where they differ: both are
 * hashed first, so neither their contents nor their lengths show in the timing. */
export function metricsTokenMatches(presented: string, expected: string): boolean {
  const a = createHash('sha256').update(presented, 'utf8').digest();
  const b = createHash('sha256').update(expected, 'utf8').digest();
  return timingSafeEqual(a, b);
}

export function metricsHandler(metrics: RelayMetrics, token: string | undefined): Handler {
  return async (ex: HttpExchange) => {
    if (token !== undefined) {
      const presented = bearerToken(ex.info.authorization);
      if (presented === undefined || !metricsTokenMatches(presented, token)) {
        throw new ProtocolError('UNAUTHENTICATED', 'metrics need the Authorization: Bearer token the relay was given');
      }
    }
    const text = await metrics.registry.metrics();
    ex.send(200, text, metrics.registry.contentType);
  };
}

export const notFound: Handler = async () => {
  throw new ProtocolError('NOT_FOUND', 'no such route');
};

/** The routes of the metrics listener: /metrics, and NOT_FOUND for everything else. */
export function registerMetricsListener(app: TemplatedApp, deps: RouterDeps & { readonly metricsToken: string | undefined }): void {
  const { route } = createRouter(deps);
  app.get('/metrics', route('metrics', 0, metricsHandler(deps.metrics, deps.metricsToken)));
  app.any('/*', route('not_found', 0, notFound));
}
