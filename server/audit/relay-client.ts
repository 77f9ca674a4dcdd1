/**
 * The auditor's client of a relay's receipt-log API. Every answer is read within a size
 * limit and a timeout, and decoded with the protocol's own decoders; anything else is a
 * RelayAnswerError naming the request (never a crash, never taken as valid).
 */
import { parseJsonObject, type JsonObject } from '../../protocol/decode.js';
import { ProtocolError } from '../../protocol/errors.js';
import {
  type CheckpointRecord,
  type ConsistencyProofAnswer,
  type InclusionProofAnswer,
  type LogKeyAnswer,
  type ReceiptsAnswer,
  decodeCheckpointsAnswer,
  decodeConsistencyProofAnswer,
  decodeInclusionProofAnswer,
  decodeLogKeyAnswer,
  decodeReceiptsAnswer,
} from '../../protocol/log.js';
import { AUDIT_CHECKPOINTS_PAGE, AUDIT_RECEIPTS_PAGE, MAX_RELAY_ANSWER_BYTES, MAX_RELAY_NOTE_BYTES, RELAY_REQUEST_TIMEOUT_MS } from './limits.js';

/** A relay that could not be reached, answered with an error, or answered something malformed. */
export class RelayAnswerError extends Error {
  override readonly name = 'RelayAnswerError';
  constructor(
    readonly request: string,
    message: string,
    /** The relay's error code, when it answered one. */
    readonly relayCode?: string,
  ) {
    super(`${request}: ${message}`);
  }
}

const decoder = new TextDecoder('utf-8', { fatal: true });

export class RelayClient {
  readonly baseUrl: string;
  readonly #token: string | undefined;

  constructor(baseUrl: string, token?: string) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.#token = token;
  }

  /** Never shows the token. */
  toJSON(): { baseUrl: string } {
    return { baseUrl: this.baseUrl };
  }

  async #bytes(path: string, maxBytes: number, auth: boolean): Promise<Buffer> {
    let res: Response;
    try {
      res = await fetch(`${this.baseUrl}${path}`, {
        headers: auth && this.#token !== undefined ? { authorization: `Bearer ${this.#token}` } : {},
        signal: AbortSignal.timeout(RELAY_REQUEST_TIMEOUT_MS),
        redirect: 'error',
      });
    } catch (err) {
      throw new RelayAnswerError(path, `unreachable (${(err as Error).message.slice(0, 200)})`);
    }
    const declared = Number(res.headers.get('content-length') ?? '0');
    if (declared > maxBytes) {
      await res.body?.cancel();
      throw new RelayAnswerError(path, `answer larger than ${maxBytes} bytes`);
    }
    const chunks: Uint8Array[] = [];
    let total = 0;
    const reader = res.body?.getReader();
    try {
      for (;;) {
        if (reader === undefined) break;
        const { done, value } = await reader.read();
        if (done) break;
        total += value.length;
        if (total > maxBytes) {
          await reader.cancel();
          throw new RelayAnswerError(path, `answer larger than ${maxBytes} bytes`);
        }
        chunks.push(value);
      }
    } catch (err) {
      if (err instanceof RelayAnswerError) throw err;
      throw new RelayAnswerError(path, `answer cut off (${(err as Error).message.slice(0, 200)})`);
    }
    const body = Buffer.concat(chunks, total);
    if (res.status !== 200) {
      let code: string | undefined;
      try {
        const e = JSON.parse(body.toString('utf8')) as { error?: { code?: unknown } };
        if (typeof e.error?.code === 'string' && /^[A-Z_]{1,64}$/.test(e.error.code)) code = e.error.code;
      } catch {
        /* not a JSON error body */
      }
      throw new RelayAnswerError(path, `HTTP ${res.status}${code ? ` ${code}` : ''}`, code);
    }
    return body;
  }

  async #get(path: string, maxBytes: number, auth: boolean): Promise<string> {
    const body = await this.#bytes(path, maxBytes, auth);
    try {
      return decoder.decode(body);
    } catch {
      throw new RelayAnswerError(path, 'answer is not UTF-8');
    }
  }

  async #json<T>(path: string, decode: (o: JsonObject) => T, auth = false): Promise<T> {
    const text = await this.#get(path, MAX_RELAY_ANSWER_BYTES, auth);
    try {
      return decode(parseJsonObject(text, 'answer'));
    } catch (err) {
      if (err instanceof ProtocolError) throw new RelayAnswerError(path, `malformed answer: ${err.message}`);
      throw err;
    }
  }

  key(): Promise<LogKeyAnswer> {
    return this.#json('/v1/log/key', decodeLogKeyAnswer);
  }

  /** The newest signed checkpoint note. */
  checkpoint(): Promise<string> {
    return this.#get('/v1/log/checkpoint', MAX_RELAY_NOTE_BYTES, false);
  }

  /** Kept checkpoints of size ≥ `from`, oldest first, up to `toSize`. */
  async *checkpoints(from: number, toSize: number): AsyncGenerator<CheckpointRecord> {
    let next = from;
    for (;;) {
      const page = await this.#json(`/v1/log/checkpoints?from=${next}&limit=${AUDIT_CHECKPOINTS_PAGE}`, decodeCheckpointsAnswer);
      for (const c of page.checkpoints) {
        if (c.size < next) throw new RelayAnswerError('/v1/log/checkpoints', 'checkpoints out of order');
        if (c.size > toSize) return;
        yield c;
        next = c.size + 1;
      }
      if (page.checkpoints.length < AUDIT_CHECKPOINTS_PAGE) return;
    }
  }

  /** Every receipt from index `from` on below `toSize` (auditor token), in index order. */
  async *receipts(from: number, toSize: number): AsyncGenerator<ReceiptsAnswer['receipts'][number]> {
    let next = from;
    while (next < toSize) {
      const page = await this.#json(`/v1/log/receipts?from=${next}&limit=${AUDIT_RECEIPTS_PAGE}`, decodeReceiptsAnswer, true);
      for (const r of page.receipts) {
        if (r.index < next) throw new RelayAnswerError('/v1/log/receipts', 'receipts out of order');
        if (r.index >= toSize) return;
        yield r;
        next = r.index + 1;
      }
      if (page.next === undefined) return;
      if (page.next < next) throw new RelayAnswerError('/v1/log/receipts', 'next page goes backwards');
      next = page.next;
    }
  }

  /**
   * Whether the token carries the auditor claim: without it the receipt listing holds
   * only the caller's own receipts. Probed with the first data tile (NOT_FOUND, on an
   * empty log, is past the auditor check).
   */
  async isAuditor(): Promise<boolean> {
    try {
      await this.#bytes('/v1/log/tile/entries/000.p/1', MAX_RELAY_ANSWER_BYTES, true);
      return true;
    } catch (err) {
      if (err instanceof RelayAnswerError && err.relayCode === 'NOT_FOUND') return true;
      if (err instanceof RelayAnswerError && err.relayCode === 'AUDITOR_ONLY') return false;
      throw err;
    }
  }

  inclusion(index: number, size: number): Promise<InclusionProofAnswer> {
    return this.#json(`/v1/log/proof/inclusion?index=${index}&size=${size}`, decodeInclusionProofAnswer);
  }

  consistency(from: number, to: number): Promise<ConsistencyProofAnswer> {
    return this.#json(`/v1/log/proof/consistency?from=${from}&to=${to}`, decodeConsistencyProofAnswer);
  }

  /** A device's identity key as a JWK; undefined when the relay has no such active device. */
  async jwk(user: string, device: string): Promise<JsonObject | undefined> {
    try {
      return await this.#json(`/v1/users/${encodeURIComponent(user)}/devices/${encodeURIComponent(device)}/jwk`, (o) => o, true);
    } catch (err) {
      if (err instanceof RelayAnswerError && err.relayCode === 'DEVICE_NOT_FOUND') return undefined;
      throw err;
    }
  }
}
