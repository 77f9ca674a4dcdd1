/**
 * The relay's HTTP routes (docs/PROTOCOL.md "HTTP"), as typed calls: every answer goes
 * through the protocol/ decoders, and every refusal becomes an SdkError carrying the
 * relay's code.
 */
import { encodeBase64url } from '../../protocol/base64url.js';
import { asObject, parseJsonObject } from '../../protocol/decode.js';
import {
  type BundleAnswer,
  type DeviceEntryAnswer,
  type DeviceListAnswer,
  type KeyCountsAnswer,
  decodeBundleAnswer,
  decodeDeviceEntryAnswer,
  decodeDeviceListAnswer,
  decodeKeyCountsAnswer,
} from '../../protocol/directory.js';
import { ProtocolError, parseErrorBody } from '../../protocol/errors.js';
import { SdkError } from '../errors.js';

export type FetchLike = (url: string, init: { method: string; headers: Record<string, string>; body?: string }) => Promise<{
  status: number;
  text(): Promise<string>;
}>;

export interface WireKey {
  readonly keyId: number;
  readonly publicKey: Uint8Array;
  readonly signature: Uint8Array;
}

export interface KeyUpload {
  readonly signedPrekey?: WireKey;
  readonly lastResortKemPrekey?: WireKey;
  readonly oneTimePrekeys?: readonly WireKey[];
  readonly oneTimeKemPrekeys?: readonly WireKey[];
}

/** Largest answer body read from the relay (a whole device list of 1024 entries fits). */
const MAX_ANSWER_BYTES = 2 * 1024 * 1024;

function wire(k: WireKey): Record<string, unknown> {
  return { keyId: k.keyId, publicKey: encodeBase64url(k.publicKey), signature: encodeBase64url(k.signature) };
}

export class RelayHttp {
  constructor(
    private readonly baseUrl: string,
    private readonly token: (fresh: boolean) => Promise<string>,
    private readonly fetchImpl: FetchLike,
  ) {}

  deviceList(userId: string, after?: number): Promise<DeviceListAnswer> {
    const q = after === undefined ? '' : `?after=${after}`;
    return this.#call('GET', `/v1/users/${encodeURIComponent(userId)}/devices${q}`, undefined, decodeDeviceListAnswer);
  }

  postDeviceEntry(entry: Uint8Array): Promise<DeviceEntryAnswer> {
    return this.#call('POST', '/v1/devices', { entry: encodeBase64url(entry) }, decodeDeviceEntryAnswer);
  }

  uploadKeys(deviceId: string, upload: KeyUpload): Promise<KeyCountsAnswer> {
    const body: Record<string, unknown> = {};
    if (upload.signedPrekey) body.signedPrekey = wire(upload.signedPrekey);
    if (upload.lastResortKemPrekey) body.lastResortKemPrekey = wire(upload.lastResortKemPrekey);
    if (upload.oneTimePrekeys?.length) body.oneTimePrekeys = upload.oneTimePrekeys.map(wire);
    if (upload.oneTimeKemPrekeys?.length) body.oneTimeKemPrekeys = upload.oneTimeKemPrekeys.map(wire);
    return this.#call('PUT', `/v1/devices/${encodeURIComponent(deviceId)}/keys`, body, decodeKeyCountsAnswer);
  }

  keyCounts(deviceId: string): Promise<KeyCountsAnswer> {
    return this.#call('GET', `/v1/devices/${encodeURIComponent(deviceId)}/keys`, undefined, decodeKeyCountsAnswer);
  }

  bundle(userId: string, deviceId: string): Promise<BundleAnswer> {
    return this.#call('POST', `/v1/users/${encodeURIComponent(userId)}/devices/${encodeURIComponent(deviceId)}/bundle`, undefined, decodeBundleAnswer);
  }

  async #call<T>(method: string, path: string, body: unknown, decode: (o: ReturnType<typeof asObject>) => T): Promise<T> {
    // One retry with a fresh token when the relay says the token expired.
    for (let attempt = 0; ; attempt++) {
      const token = await this.token(attempt > 0);
      const headers: Record<string, string> = { authorization: `Bearer ${token}` };
      if (body !== undefined) headers['content-type'] = 'application/json';
      let status: number;
      let text: string;
      try {
        const res = await this.fetchImpl(`${this.baseUrl}${path}`, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
        status = res.status;
        text = await res.text();
      } catch (cause) {
        throw new SdkError('NETWORK_ERROR', `${method} ${path}: the relay could not be reached`, { cause });
      }
      if (text.length > MAX_ANSWER_BYTES) throw new SdkError('RELAY_PROTOCOL_ERROR', `${method} ${path}: answer too large`);
      if (status >= 200 && status < 300) {
        try {
          return decode(parseJsonObject(text, 'answer'));
        } catch (cause) {
          if (cause instanceof ProtocolError) throw new SdkError('RELAY_PROTOCOL_ERROR', `${method} ${path}: ${cause.message}`, { cause });
          throw cause;
        }
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
      const e = parseErrorBody((parsed as { error?: unknown } | undefined)?.error);
      if (e === undefined) throw new SdkError('RELAY_PROTOCOL_ERROR', `${method} ${path}: HTTP ${status} without a well-formed error`);
      if (e.code === 'TOKEN_EXPIRED' && attempt === 0) continue;
      throw new SdkError('RELAY_ERROR', `${method} ${path}: ${e.code}: ${e.message}`, { relayCode: e.code, ...(e.details ? { details: { ...e.details } } : {}) });
    }
  }
}
