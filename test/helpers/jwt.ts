/**
 * A test identity provider: an Ed25519 signing key whose public half is written as a
 * JWKS file the relay is pointed at (HERMETIC_JWKS_FILE), and a minter for tokens with
 * any claims a test needs (expired, foreign issuer, foreign audience, ...).
 */
import fs from 'node:fs';
import path from 'node:path';
import { type CryptoKey, SignJWT, exportJWK, generateKeyPair } from 'jose';

export interface TestIssuer {
  readonly issuer: string;
  readonly audience: string;
  readonly jwksFile: string;
  /** Relay variables for this issuer. */
  readonly env: Record<string, string>;
  mint(sub: string, opts?: { issuer?: string; audience?: string; expiresAt?: number; key?: CryptoKey; claims?: Record<string, unknown> }): Promise<string>;
}

export async function createTestIssuer(dir: string, issuer = 'https://idp.test.example', audience = 'hermetic-test'): Promise<TestIssuer> {
  const { privateKey, publicKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), alg: 'EdDSA', kid: 'test-1', use: 'sig' };
  const jwksFile = path.join(dir, 'jwks.json');
  fs.writeFileSync(jwksFile, JSON.stringify({ keys: [jwk] }));
  return {
    issuer,
    audience,
    jwksFile,
    env: { HERMETIC_JWKS_FILE: jwksFile, HERMETIC_JWT_ISSUER: issuer, HERMETIC_JWT_AUDIENCE: audience },
    mint: (sub, opts = {}) =>
      new SignJWT({ ...opts.claims })
        .setProtectedHeader({ alg: 'EdDSA', kid: 'test-1' })
        .setSubject(sub)
        .setIssuer(opts.issuer ?? issuer)
        .setAudience(opts.audience ?? audience)
        .setIssuedAt()
        .setExpirationTime(opts.expiresAt ?? Math.floor(Date.now() / 1000) + 3600)
        .sign(opts.key ?? privateKey),
  };
}
