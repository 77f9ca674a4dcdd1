/**
 * Dev mode: when no JWKS is configured (and NODE_ENV is not production) the relay issues
 * its own tokens with an Ed25519 key kept in its data directory, so that `npm start`
 * works with no identity provider. `hermetic token <user>` mints tokens with that key.
 */
import fs from 'node:fs';
import path from 'node:path';
import { SignJWT, createLocalJWKSet, exportJWK, generateKeyPair, importJWK, type JWK, type JWTVerifyGetKey } from 'jose';
import { DEV_AUDIENCE, DEV_ISSUER } from '../config.js';
import { AUDITOR_CLAIM } from './tokens.js';
import { TOPICS_CLAIM, type TopicAction } from '../topics/acl.js';

/** The topic patterns a token grants, per action (PROTOCOL.md "Topics", access control). */
export type TopicsClaim = Partial<Record<TopicAction, readonly string[]>>;

const KEY_FILE = 'dev-issuer.jwk.json';
const ALG = 'EdDSA';

export interface DevIssuer {
  readonly keySet: JWTVerifyGetKey;
  readonly keyFile: string;
  /** A token for `userId`; with `auditor`, carrying the receipt log's auditor claim; with
   * `topics`, the `hermetic_topics` claim (PROTOCOL.md "Topics"). */
  mint(userId: string, ttlSeconds: number, opts?: { auditor?: boolean; topics?: TopicsClaim }): Promise<string>;
}

async function loadOrCreateJwk(dataDir: string): Promise<{ jwk: JWK; file: string }> {
  fs.mkdirSync(dataDir, { recursive: true });
  const file = path.join(dataDir, KEY_FILE);
  if (fs.existsSync(file)) return { jwk: JSON.parse(fs.readFileSync(file, 'utf8')) as JWK, file };
  const { privateKey } = await generateKeyPair(ALG, { crv: 'Ed25519', extractable: true });
  const jwk = { ...(await exportJWK(privateKey)), alg: ALG, kid: 'dev-1' };
  // 'wx': never overwrite a key another process created meanwhile; 0600: it is a secret.
  try {
    fs.writeFileSync(file, JSON.stringify(jwk), { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return { jwk: JSON.parse(fs.readFileSync(file, 'utf8')) as JWK, file };
  }
  return { jwk, file };
}

export async function openDevIssuer(dataDir: string): Promise<DevIssuer> {
  const { jwk, file } = await loadOrCreateJwk(dataDir);
  const { d: _secret, ...publicJwk } = jwk;
  const privateKey = await importJWK(jwk, ALG);
  return {
    keySet: createLocalJWKSet({ keys: [publicJwk] }),
    keyFile: file,
    async mint(userId: string, ttlSeconds: number, opts: { auditor?: boolean; topics?: TopicsClaim } = {}): Promise<string> {
      return new SignJWT({ ...(opts.auditor ? { [AUDITOR_CLAIM]: true } : {}), ...(opts.topics ? { [TOPICS_CLAIM]: opts.topics } : {}) })
        .setProtectedHeader({ alg: ALG, kid: jwk.kid ?? 'dev-1' })
        .setSubject(userId)
        .setIssuer(DEV_ISSUER)
        .setAudience(DEV_AUDIENCE)
        .setIssuedAt()
        .setExpirationTime(Math.floor(Date.now() / 1000) + ttlSeconds)
        .sign(privateKey);
    },
  };
}
