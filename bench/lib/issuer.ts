/**
 * A throwaway identity provider for benchmark relays: an Ed25519 key whose public half
 * is written as a JWKS file the relay is pointed at (HERMETIC_JWKS_FILE), and a minter of
 * user tokens signed with it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';

export interface BenchIssuer {
  /** Relay variables that make it trust this issuer. */
  readonly env: Readonly<Record<string, string>>;
  /** A token for `userId`, carrying `claims` besides the usual ones (e.g. `hermetic_topics`). */
  mint(userId: string, claims?: Readonly<Record<string, unknown>>): Promise<string>;
}

const ISSUER = 'https://bench.hermetic.invalid';
const AUDIENCE = 'hermetic-bench';
const KID = 'bench-1';
/** Long enough for any benchmark run. */
const TOKEN_TTL_S = 3600;

export async function createIssuer(dir: string): Promise<BenchIssuer> {
  const { privateKey, publicKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), alg: 'EdDSA', kid: KID, use: 'sig' };
  const jwksFile = path.join(dir, 'bench-jwks.json');
  fs.writeFileSync(jwksFile, JSON.stringify({ keys: [jwk] }));
  return {
    env: { HERMETIC_JWKS_FILE: jwksFile, HERMETIC_JWT_ISSUER: ISSUER, HERMETIC_JWT_AUDIENCE: AUDIENCE },
    mint: (userId, claims = {}) =>
      new SignJWT({ ...claims })
        .setProtectedHeader({ alg: 'EdDSA', kid: KID })
        .setSubject(userId)
        .setIssuer(ISSUER)
        .setAudience(AUDIENCE)
        .setIssuedAt()
        .setExpirationTime(Math.floor(Date.now() / 1000) + TOKEN_TTL_S)
        .sign(privateKey),
  };
}
