/**
 * The PQXDH-style key derivation both sides run (Signal's PQXDH, revision 3, §3.3):
 *
 *   DH1 = DH(IK_A, SPK_B)   DH2 = DH(EK_A, IK_B)   DH3 = DH(EK_A, SPK_B)
 *   DH4 = DH(EK_A, OPK_B)   (only when a one-time prekey was used)
 *   SS  = ML-KEM-768 shared secret encapsulated to the KEM prekey
 *
 *   SK = HKDF-SHA256(ikm  = 0xFF * 32 || DH1 || DH2 || DH3 [|| DH4] || SS,
 *                    salt = 0x00 * 32,
 *                    info = PQXDH_INFO, length 32)
 *
 * IK are the identity keys in X25519 form (identity-dh.ts). The 32 0xFF bytes make the
 * KDF input never a valid X25519 output prefix (as in X3DH §2.2). ML-KEM binds its
 * encapsulation key into SS (K depends on H(ek), FIPS 203), which is what PQXDH needs to
 * rule out re-encapsulation to a different key.
 */
import type { CryptoBackend } from '../primitives/backend.js';
import { KDF_LABELS, kdfLabelBytes } from '../../protocol/labels.js';
import { concatBytes } from '../primitives/bytes.js';

/** Versioned and names every algorithm: a change to any of them is a new protocol. */
export const PQXDH_INFO = kdfLabelBytes(KDF_LABELS.pqxdh);

const F = new Uint8Array(32).fill(0xff);
const SALT = new Uint8Array(32);

export function deriveHandshakeSecret(
  backend: CryptoBackend,
  dh1: Uint8Array,
  dh2: Uint8Array,
  dh3: Uint8Array,
  dh4: Uint8Array | undefined,
  kemSecret: Uint8Array,
): Uint8Array {
  const parts = dh4 === undefined ? [F, dh1, dh2, dh3, kemSecret] : [F, dh1, dh2, dh3, dh4, kemSecret];
  const ikm = concatBytes(...parts);
  const sk = backend.hkdfSha256(ikm, SALT, PQXDH_INFO, 32);
  ikm.fill(0);
  return sk;
}
