/**
 * User authentication: a JWT from the embedding app names the user (`sub`). Verified with
 * jose against a JWKS (remote URL or local file), with the expected issuer and audience,
 * an algorithm allowlist and a clock tolerance. Tokens are only ever read from the
 * Authorization header or an authentication frame, never from a URL.
 */
import fs from 'node:fs';
import { createLocalJWKSet, createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTVerifyGetKey } from 'jose';
import { ProtocolError } from '../../protocol/errors.js';
import { MAX_TOKEN_BYTES, MAX_USER_ID_LENGTH, USER_ID_PATTERN } from '../../protocol/limits.js';
import type { AuthConfig } from '../config.js';
import { TOPICS_CLAIM, type TopicGrants, parseTopicGrants } from '../topics/acl.js';

/** Asymmetric algorithms only: a symmetric key shared with the relay would let the relay
 * mint tokens, and `none` is never acceptable. */
export const ALLOWED_JWT_ALGORITHMS = ['EdDSA', 'Ed25519', 'ES256', 'RS256'] as const;

/** The claim that makes a token's holder an auditor of the receipt log (docs/SECURITY.md):
 * it may read every logged receipt, not only those of its own user. Only the JSON value
 * `true` counts. */
export const AUDITOR_CLAIM = 'hermetic_auditor';

export interface VerifiedToken {
  /** The token's `sub`. */
  readonly userId: string;
  /** The token's `exp`, in ms since the epoch. */
  readonly expiresAtMs: number;
  /** The last moment the token is accepted: `exp` plus the clock tolerance, in ms. */
  readonly validUntilMs: number;
  /** The token carries `"hermetic_auditor": true`. */
  readonly auditor: boolean;
  /** What the token's `hermetic_topics` claim allows (server/topics/acl.ts). */
  readonly topics: TopicGrants;
}

export interface TokenVerifier {
  /** Resolves to the token's user and lifetime, or throws ProtocolError with a TOKEN_* code. */
  verify(token: string): Promise<VerifiedToken>;
}

export function createTokenVerifier(auth: AuthConfig, keySet: JWTVerifyGetKey): TokenVerifier {
  return {
    async verify(token: string): Promise<VerifiedToken> {
      if (token.length === 0 || token.length > MAX_TOKEN_BYTES) {
        throw new ProtocolError('TOKEN_INVALID', 'token missing or too long');
      }
      let sub: unknown;
      let exp: unknown;
      let auditor = false;
      let topics: TopicGrants;
      try {
        const { payload } = await jwtVerify(token, keySet, {
          issuer: auth.issuer,
          audience: auth.audience,
          algorithms: [...ALLOWED_JWT_ALGORITHMS],
          clockTolerance: auth.clockToleranceSec,
          requiredClaims: ['sub', 'exp'],
        });
        sub = payload.sub;
        exp = payload.exp;
        auditor = payload[AUDITOR_CLAIM] === true;
        topics = parseTopicGrants(payload[TOPICS_CLAIM]);
      } catch (err) {
        throw mapJoseError(err);
      }
      if (typeof sub !== 'string' || sub.length === 0 || sub.length > MAX_USER_ID_LENGTH || !USER_ID_PATTERN.test(sub)) {
        throw new ProtocolError('TOKEN_INVALID', `token subject must be 1..${MAX_USER_ID_LENGTH} printable ASCII characters`);
      }
      // jose has checked that exp is a number in the future (within the tolerance).
      const expiresAtMs = Math.floor(Number(exp) * 1000);
      return { userId: sub, expiresAtMs, validUntilMs: expiresAtMs + auth.clockToleranceSec * 1000, auditor, topics };
    },
  };
}

function mapJoseError(err: unknown): ProtocolError {
  if (err instanceof joseErrors.JWTExpired) return new ProtocolError('TOKEN_EXPIRED', 'token expired');
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.claim === 'iss') return new ProtocolError('TOKEN_WRONG_ISSUER', 'token issuer is not accepted');
    if (err.claim === 'aud') return new ProtocolError('TOKEN_WRONG_AUDIENCE', 'token audience is not accepted');
    return new ProtocolError('TOKEN_INVALID', `token claim ${err.claim} is invalid`);
  }
  // The key set could not be fetched: the relay's problem, not a bad token.
  if (err instanceof joseErrors.JWKSTimeout || !(err instanceof joseErrors.JOSEError)) {
    return new ProtocolError('UNAVAILABLE', 'token key set unavailable, retry later');
  }
  return new ProtocolError('TOKEN_INVALID', 'token is not valid');
}

/** The key set for a JWKS configuration (dev mode builds its own, see dev-issuer.ts). */
export function keySetFromConfig(auth: Extract<AuthConfig, { mode: 'jwks' }>): JWTVerifyGetKey {
  if (auth.jwksUrl) return createRemoteJWKSet(new URL(auth.jwksUrl), { timeoutDuration: 5000, cooldownDuration: 30_000 });
  const file = auth.jwksFile as string;
  let jwks: unknown;
  try {
    jwks = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`HERMETIC_JWKS_FILE ${file} could not be read as JSON: ${(err as Error).message}`);
  }
  return createLocalJWKSet(jwks as Parameters<typeof createLocalJWKSet>[0]);
}

/** Reads a bearer token from an Authorization header value; undefined when absent. The
 * scheme name is case-insensitive (RFC 9110 §11.1). */
export function bearerToken(header: string): string | undefined {
  if (header === '') return undefined;
  const m = /^Bearer ([A-Za-z0-9._~+/-]+=*)$/i.exec(header);
  if (!m) throw new ProtocolError('UNAUTHENTICATED', 'Authorization header must be "Bearer <token>"');
  return m[1];
}
