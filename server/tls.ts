/**
 * TLS for `hermetic serve`: with HERMETIC_TLS_CERT_FILE and HERMETIC_TLS_KEY_FILE the
 * relay serves https:// and wss:// itself (uWebSockets.js SSLApp). The files are
 * checked at startup, so that a wrong path or a key that does not belong to the
 * certificate stops the relay with a message naming the variable instead of a
 * listener that fails every handshake.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import fs from 'node:fs';
import type { AppOptions } from 'uWebSockets.js';
import { ConfigError, type TlsConfig } from './config.js';

export interface TlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
  /** The certificate's validity end, for the startup log. */
  readonly validTo: string;
}

function readPem(file: string, variable: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`${variable}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/** Reads and checks the certificate and key; throws ConfigError naming the variable at fault. */
export function checkTlsFiles(tls: TlsConfig): TlsFiles {
  const certPem = readPem(tls.certFile, 'HERMETIC_TLS_CERT_FILE');
  const keyPem = readPem(tls.keyFile, 'HERMETIC_TLS_KEY_FILE');
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch {
    throw new ConfigError(`HERMETIC_TLS_CERT_FILE: ${tls.certFile} is not a PEM certificate`);
  }
  let key: ReturnType<typeof createPrivateKey>;
  try {
    key = createPrivateKey(keyPem);
  } catch {
    // The key's contents are never echoed.
    throw new ConfigError(`HERMETIC_TLS_KEY_FILE: ${tls.keyFile} is not an unencrypted PEM private key`);
  }
  if (!cert.checkPrivateKey(key)) {
    throw new ConfigError(`HERMETIC_TLS_KEY_FILE: the key in ${tls.keyFile} does not belong to the certificate in ${tls.certFile}`);
  }
  return { certFile: tls.certFile, keyFile: tls.keyFile, validTo: cert.validTo };
}

/** uWebSockets.js SSLApp options for checked files. */
export function sslAppOptions(files: TlsFiles): AppOptions {
  return { cert_file_name: files.certFile, key_file_name: files.keyFile };
}
