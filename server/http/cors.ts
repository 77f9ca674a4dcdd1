/**
 * Cross-origin requests from browser apps (CORS): a page served from another origin than
 * the relay calls its HTTP routes with an Authorization header, which the browser first
 * checks with a preflight. Origins are allowed only when listed in HERMETIC_CORS_ORIGINS
 * (or all, with `*`: tokens travel in a header, never in cookies, so no request carries
 * credentials the browser would add by itself). Without the setting, the relay answers no
 * preflight and serves same-origin pages only.
 */
export type CorsPolicy = { readonly kind: 'none' } | { readonly kind: 'any' } | { readonly kind: 'list'; readonly origins: ReadonlySet<string> };

/** How long a browser may cache a preflight answer. */
export const CORS_MAX_AGE_SECONDS = 600;

/** The `Access-Control-Allow-Origin` value for a request from `origin`, if it is allowed. */
export function allowedOrigin(policy: CorsPolicy, origin: string): string | undefined {
  if (origin === '' || policy.kind === 'none') return undefined;
  if (policy.kind === 'any') return '*';
  return policy.origins.has(origin) ? origin : undefined;
}

/** The headers of a preflight answer for an allowed origin. */
export function preflightHeaders(allowed: string): Array<[string, string]> {
  return [
    ['access-control-allow-origin', allowed],
    ['access-control-allow-methods', 'GET, POST, PUT, DELETE'],
    ['access-control-allow-headers', 'authorization, content-type'],
    ['access-control-max-age', String(CORS_MAX_AGE_SECONDS)],
    ['vary', 'origin'],
  ];
}
