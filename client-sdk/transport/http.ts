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
import { type CreateGroupRequest, type CreateTopicRequest, type GroupInfoAnswer, type TopicInfoAnswer, decodeGroupInfo, decodeTopicInfo } from '../../protocol/topics.js';
import { type Clock, systemClock } from '../clock.js';
import { SdkError } from '../errors.js';
import { HTTP_REQUEST_TIMEOUT_MS, MAX_ANSWER_BYTES } from '../limits.js';

/** What RelayHttp needs of an HTTP answer; fetch's Response has all of it. */
export interface FetchAnswer {
  readonly status: number;
  /** When present, a Content-Length beyond MAX_ANSWER_BYTES is refused unread. */
  readonly headers?: { get(name: string): string | null } | undefined;
  /** When present, the body is read from this stream with a byte cap; otherwise `text()`
   * is used (an implementation without streams must bound the body itself). */
  readonly body?: ReadableStream<Uint8Array> | null | undefined;
  text(): Promise<string>;
}

export type FetchLike = (
  url: string,
  init: { method: string; headers: Record<string, string>; body?: string; signal?: AbortSignal },
) => Promise<FetchAnswer>;

export interface RelayHttpOptions {
  /** Bound on one call (default HTTP_REQUEST_TIMEOUT_MS). */
  readonly timeoutMs?: number;
  readonly clock?: Clock;
}

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

function wire(k: WireKey): Record<string, unknown> {
  return { keyId: k.keyId, publicKey: encodeBase64url(k.publicKey), signature: encodeBase64url(k.signature) };
}

export class RelayHttp {
  constructor(
    private readonly baseUrl: string,
    private readonly token: (fresh: boolean) => Promise<string>,
    private readonly fetchImpl: FetchLike,
    private readonly opts: RelayHttpOptions = {},
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

  /**
   * Submits signed receipts to the relay's transparency log; resolves with each one's
   * leaf index once the relay appended them durably.
   */
  submitReceipts(receipts: readonly string[]): Promise<number[]> {
    return this.#call('POST', '/v1/log/receipts', { receipts }, (o) => {
      const list = o.entries;
      if (!Array.isArray(list) || list.length !== receipts.length) throw new ProtocolError('BAD_REQUEST', 'log answer: expected one entry per receipt submitted');
      return list.map((r: unknown) => {
        const index = (r as { index?: unknown } | null)?.index;
        if (typeof index !== 'number' || !Number.isSafeInteger(index) || index < 0) throw new ProtocolError('BAD_REQUEST', 'log answer: an entry without a leaf index');
        return index;
      });
    });
  }

  createTopic(req: CreateTopicRequest): Promise<TopicInfoAnswer> {
    return this.#call('POST', '/v1/topics', { name: req.name, ...(req.retentionMs !== undefined ? { retentionMs: req.retentionMs } : {}), ...(req.retentionBytes !== undefined ? { retentionBytes: req.retentionBytes } : {}) }, decodeTopicInfo);
  }

  topicInfo(name: string): Promise<TopicInfoAnswer> {
    return this.#call('GET', `/v1/topics/${encodeURIComponent(name)}`, undefined, decodeTopicInfo);
  }

  createGroup(topic: string, req: CreateGroupRequest): Promise<GroupInfoAnswer> {
    return this.#call('POST', `/v1/topics/${encodeURIComponent(topic)}/groups`, { ...req }, decodeGroupInfo);
  }

  groupInfo(topic: string, group: string): Promise<GroupInfoAnswer> {
    return this.#call('GET', `/v1/topics/${encodeURIComponent(topic)}/groups/${encodeURIComponent(group)}`, undefined, decodeGroupInfo);
  }

  async #call<T>(method: string, path: string, body: unknown, decode: (o: ReturnType<typeof asObject>) => T): Promise<T> {
    // One retry with a fresh token when the relay says the token expired.
    for (let attempt = 0; ; attempt++) {
      const token = await this.token(attempt > 0);
      const headers: Record<string, string> = { authorization: `Bearer ${token}` };
      if (body !== undefined) headers['content-type'] = 'application/json';
      const { status, text } = await this.#exchange(method, path, headers, body);
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

  /**
   * Sends one request and reads its answer, within the call's time bound and
   * MAX_ANSWER_BYTES. An answer that exceeds the cap is abandoned (RELAY_PROTOCOL_ERROR);
   * no answer in time, or no connection, is NETWORK_ERROR.
   */
  async #exchange(method: string, path: string, headers: Record<string, string>, body: unknown): Promise<{ status: number; text: string }> {
    const clock = this.opts.clock ?? systemClock;
    const timeoutMs = this.opts.timeoutMs ?? HTTP_REQUEST_TIMEOUT_MS;
    const abort = new AbortController();
    let timedOut = false;
    // The bound holds even for a FetchLike that ignores the signal.
    let expire: (err: Error) => void = () => undefined;
    const expired = new Promise<never>((_, reject) => {
      expire = reject;
    });
    expired.catch(() => undefined);
    const timer = clock.setTimeout(() => {
      timedOut = true;
      abort.abort();
      expire(new Error(`timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    const exchange = async () => {
      const res = await this.fetchImpl(`${this.baseUrl}${path}`, {
        method,
        headers,
        signal: abort.signal,
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      const text = await readAnswer(res, abort);
      if (text === undefined) throw new SdkError('RELAY_PROTOCOL_ERROR', `${method} ${path}: answer larger than ${MAX_ANSWER_BYTES} bytes`);
      return { status: res.status, text };
    };
    const work = exchange();
    work.catch(() => undefined); // when the timer wins, its late failure is not reported
    try {
      return await Promise.race([work, expired]);
    } catch (cause) {
      if (cause instanceof SdkError) throw cause;
      if (timedOut) throw new SdkError('NETWORK_ERROR', `${method} ${path}: no complete answer within ${timeoutMs} ms`, { cause });
      throw new SdkError('NETWORK_ERROR', `${method} ${path}: the relay could not be reached`, { cause });
    } finally {
      clock.clearTimeout(timer);
    }
  }
}

/**
 * The answer's body as text, or undefined when it is larger than MAX_ANSWER_BYTES: a
 * declared Content-Length is checked first, then the stream is read and abandoned (the
 * request aborted) at the first chunk past the cap.
 */
async function readAnswer(res: FetchAnswer, abort: AbortController): Promise<string | undefined> {
  const declared = res.headers?.get('content-length');
  if (declared != null && /^\d+$/.test(declared) && Number(declared) > MAX_ANSWER_BYTES) {
    abort.abort();
    return undefined;
  }
  if (!res.body) {
    const text = await res.text();
    return text.length > MAX_ANSWER_BYTES ? undefined : text;
  }
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > MAX_ANSWER_BYTES) {
      abort.abort();
      await reader.cancel().catch(() => undefined);
      return undefined;
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.byteLength;
  }
  return new TextDecoder().decode(bytes);
}
