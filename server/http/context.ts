/**
 * HTTP request handling on uWebSockets.js. uWS requests are only valid synchronously, so
 * everything needed (method, url, query, headers) is copied out before the first await;
 * onAborted is registered before any await; writes after an await are corked.
 */
import type { HttpRequest, HttpResponse } from 'uWebSockets.js';
import { ProtocolError } from '../../protocol/errors.js';
import { MAX_HTTP_BODY_BYTES } from '../../protocol/limits.js';

export interface RequestInfo {
  readonly method: string;
  readonly url: string;
  readonly query: string;
  readonly authorization: string;
  readonly contentType: string;
  readonly contentLength: number | undefined;
  /** A body is declared: a Content-Length above 0, or a Transfer-Encoding (chunked). */
  readonly hasBody: boolean;
  /** The Origin header (browsers), '' when absent. */
  readonly origin: string;
  readonly params: readonly string[];
}

export class HttpExchange {
  aborted = false;
  /** An answer was sent. */
  done = false;
  /** The route's work is over (answered, failed or aborted). */
  finished = false;
  /** The Access-Control-Allow-Origin value for this request (server/http/cors.ts), if any. */
  corsOrigin: string | undefined;
  /** 'reading' from the body read's start until all of it has arrived. */
  private body: 'unread' | 'reading' | 'read' | 'refused' = 'unread';
  private readonly abortHandlers: Array<() => void> = [];

  constructor(
    readonly res: HttpResponse,
    readonly info: RequestInfo,
    private readonly bodyTimeoutMs: number,
  ) {
    res.onAborted(() => {
      this.aborted = true;
      for (const h of this.abortHandlers) h();
    });
  }

  onAbort(h: () => void): void {
    this.abortHandlers.push(h);
  }

  /**
   * Reads the body, refusing (before buffering it) anything over `max` bytes, and
   * anything not fully arrived within the body timeout (BODY_TIMEOUT). Call it
   * synchronously in the handler: uWS drops data that arrives before onData is attached.
   */
  readBody(max = MAX_HTTP_BODY_BYTES): Promise<Buffer> {
    const declared = this.info.contentLength;
    if (declared !== undefined && declared > max) {
      return Promise.reject(new ProtocolError('BODY_TOO_LARGE', `request body over ${max} bytes`));
    }
    this.body = 'reading';
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let failed = false;
      const fail = (err: Error): void => {
        failed = true;
        clearTimeout(timer);
        reject(err);
      };
      const timer = setTimeout(
        () => fail(new ProtocolError('BODY_TIMEOUT', `request body not received within ${this.bodyTimeoutMs} ms`)),
        this.bodyTimeoutMs,
      );
      this.onAbort(() => fail(new Error('request aborted')));
      this.res.onData((chunk, isLast) => {
        if (failed) return;
        size += chunk.byteLength;
        if (size > max) {
          fail(new ProtocolError('BODY_TOO_LARGE', `request body over ${max} bytes`));
          return;
        }
        // The chunk is neutered after this callback returns: copy it.
        chunks.push(Buffer.from(new Uint8Array(chunk).slice()));
        if (isLast) {
          clearTimeout(timer);
          this.body = 'read';
          resolve(Buffer.concat(chunks, size));
        }
      });
    });
  }

  /**
   * For a route that takes no body: a request that declares one is BAD_REQUEST, and its
   * connection is closed with the answer (the body is never read).
   */
  refuseBody(): void {
    if (!this.info.hasBody) return;
    this.body = 'refused';
    throw new ProtocolError('BAD_REQUEST', 'this request takes no body');
  }

  /** Reads a JSON body (Content-Type application/json) as text, size-capped. */
  async readJsonText(max = MAX_HTTP_BODY_BYTES): Promise<string> {
    if (!/^application\/json\b/i.test(this.info.contentType)) {
      throw new ProtocolError('UNSUPPORTED_MEDIA_TYPE', 'Content-Type must be application/json');
    }
    const body = await this.readBody(max);
    return body.toString('utf8');
  }

  send(status: number, body: string, contentType = 'application/json', close = false): void {
    if (this.aborted || this.done) return;
    this.done = true;
    this.res.cork(() => {
      this.res.writeStatus(statusLine(status)).writeHeader('content-type', contentType).writeHeader('cache-control', 'no-store');
      if (this.corsOrigin !== undefined) this.res.writeHeader('access-control-allow-origin', this.corsOrigin).writeHeader('vary', 'origin');
      this.res.end(body, close);
    });
  }

  /** A 200 answer with its own content type and caching (the receipt log's resources). */
  sendResource(body: string | Uint8Array, contentType: string, cacheControl: string): void {
    if (this.aborted || this.done) return;
    this.done = true;
    this.res.cork(() => {
      this.res.writeStatus('200 OK').writeHeader('content-type', contentType).writeHeader('cache-control', cacheControl);
      if (this.corsOrigin !== undefined) this.res.writeHeader('access-control-allow-origin', this.corsOrigin).writeHeader('vary', 'origin');
      this.res.end(body);
    });
  }

  json(status: number, value: unknown): void {
    this.send(status, JSON.stringify(value));
  }

  error(err: ProtocolError): void {
    // When the body was refused or is still arriving, the rest of it is unread: close the
    // connection rather than leave the client's next request behind it.
    const unread = err.code === 'BODY_TOO_LARGE' || this.body === 'reading' || this.body === 'refused';
    this.send(err.httpStatus, JSON.stringify({ error: err.toJSON() }), 'application/json', unread);
  }
}

const REASONS: Record<number, string> = {
  200: 'OK',
  201: 'Created',
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  409: 'Conflict',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

function statusLine(status: number): string {
  return `${status} ${REASONS[status] ?? 'Status'}`;
}

/** Refuses a WebSocket upgrade with a typed JSON error and closes the connection, so a
 * refused client holds no descriptor. Call synchronously in the upgrade handler. */
export function refuseUpgrade(res: HttpResponse, err: ProtocolError): void {
  res.cork(() => {
    res.writeStatus(statusLine(err.httpStatus)).writeHeader('content-type', 'application/json').writeHeader('cache-control', 'no-store');
    res.end(JSON.stringify({ error: err.toJSON() }), true);
  });
}

/** Copies what a handler needs out of the uWS request (valid only synchronously). */
export function requestInfo(req: HttpRequest, paramCount: number): RequestInfo {
  const cl = req.getHeader('content-length');
  const contentLength = /^\d+$/.test(cl) ? Number(cl) : undefined;
  const params: string[] = [];
  for (let i = 0; i < paramCount; i++) params.push(req.getParameter(i) ?? '');
  return {
    method: req.getMethod().toUpperCase(),
    url: req.getUrl(),
    query: req.getQuery() ?? '',
    authorization: req.getHeader('authorization'),
    contentType: req.getHeader('content-type'),
    contentLength,
    hasBody: (contentLength ?? 0) > 0 || req.getHeader('transfer-encoding') !== '',
    origin: req.getHeader('origin'),
    params,
  };
}

/** Query parameters that carry credentials: refused, because URLs end up in logs. */
const TOKEN_QUERY_KEYS = /(?:^|&)(?:access_token|token|jwt|authorization)=/i;

export function refuseTokenInQuery(query: string): void {
  if (TOKEN_QUERY_KEYS.test(query)) {
    throw new ProtocolError('TOKEN_IN_QUERY', 'credentials are never accepted in a URL; use the Authorization header');
  }
}

/** C0 and C1 control characters and DEL: never part of an identifier, and PostgreSQL
 * refuses NUL in text, so they are refused here rather than reaching a query. */
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f]/;

/** A percent-decoded path parameter; bad encoding or control characters are BAD_REQUEST. */
export function decodePathParam(raw: string, field: string): string {
  let value: string;
  try {
    value = decodeURIComponent(raw);
  } catch {
    throw new ProtocolError('BAD_REQUEST', `${field}: bad percent-encoding`);
  }
  if (CONTROL_CHARACTERS.test(value)) throw new ProtocolError('BAD_REQUEST', `${field}: control characters are not allowed`);
  return value;
}

