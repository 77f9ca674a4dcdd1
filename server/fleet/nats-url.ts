/**
 * HERMETIC_NATS_URL and HERMETIC_NATS_SUBJECT_PREFIX, read without loading the NATS
 * client (server/fleet/nats-notifier.ts), so that the configuration can be checked
 * whichever notifier is used.
 */
/** A subject prefix: dot-separated tokens of letters, digits, '_' and '-' (no wildcards). */
export const NATS_SUBJECT_PREFIX_PATTERN = /^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$/;
export const MAX_NATS_SUBJECT_PREFIX_LENGTH = 128;
export const DEFAULT_NATS_SUBJECT_PREFIX = 'hermetic';

export interface NatsServers {
  /** host:port of each server, without credentials (safe to log). */
  readonly servers: readonly string[];
  readonly tls: boolean;
  readonly user?: string;
  readonly pass?: string;
  readonly token?: string;
}

export class NatsUrlError extends Error {
  override readonly name = 'NatsUrlError';
}

/**
 * Reads HERMETIC_NATS_URL: one or more comma-separated `nats://` or `tls://` URLs (all
 * of one scheme), each `[user:password@ | token@]host[:port]`. Credentials, where given,
 * must be the same on each. Errors never quote the value (it may hold a password).
 */
export function parseNatsUrl(raw: string): NatsServers {
  const servers: string[] = [];
  let scheme: string | undefined;
  let cred: { user?: string; pass?: string; token?: string } | undefined;
  for (const part of raw.split(',')) {
    let u: URL;
    try {
      u = new URL(part.trim());
    } catch {
      throw new NatsUrlError('is not a URL (or a comma-separated list of URLs)');
    }
    if (u.protocol !== 'nats:' && u.protocol !== 'tls:') throw new NatsUrlError('must use nats:// or tls://');
    if (scheme !== undefined && u.protocol !== scheme) throw new NatsUrlError('must use one scheme for every server');
    scheme = u.protocol;
    if (u.hostname === '' || (u.pathname !== '' && u.pathname !== '/') || u.search !== '' || u.hash !== '') {
      throw new NatsUrlError('must be scheme://[credentials@]host[:port], without a path, query or fragment');
    }
    const user = decodeURIComponent(u.username);
    const pass = decodeURIComponent(u.password);
    // A name without a password is a token.
    const c = user === '' ? undefined : pass === '' ? { token: user } : { user, pass };
    if (c) {
      if (cred && (cred.user !== c.user || cred.pass !== c.pass || cred.token !== c.token)) throw new NatsUrlError('must give the same credentials on every server');
      cred = c;
    }
    servers.push(`${u.hostname.includes(':') && !u.hostname.startsWith('[') ? `[${u.hostname}]` : u.hostname}:${u.port || '4222'}`);
  }
  return { servers, tls: scheme === 'tls:', ...cred };
}
