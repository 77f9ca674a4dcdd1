/**
 * How the client reaches the relay's WebSocket: an interface with one implementation per
 * runtime (the WHATWG WebSocket in browsers and Node 22+, the `ws` package on Node 20),
 * and a seam where tests put a transport of their own.
 */
export interface TransportHandlers {
  onOpen(): void;
  /** A text frame as a string, a binary frame as bytes. */
  onMessage(data: string | Uint8Array): void;
  onClose(code: number, reason: string): void;
}

export interface TransportSocket {
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}

export interface Transport {
  open(url: string, handlers: TransportHandlers): TransportSocket;
}

/** The parts of the WHATWG WebSocket the transport uses (the `ws` package has them too). */
export interface WebSocketLike {
  binaryType: string;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string | ArrayBufferLike | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** A transport over a WebSocket constructor (the global one by default). */
export function webSocketTransport(Impl: WebSocketConstructor | undefined = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket): Transport {
  if (Impl === undefined) {
    throw new Error('no WebSocket in this runtime: pass a transport (on Node 20, import the client from "hermetic/client", which uses the ws package)');
  }
  return {
    open(url, h) {
      const ws = new Impl(url);
      ws.binaryType = 'arraybuffer';
      let closed = false;
      ws.onopen = () => h.onOpen();
      ws.onmessage = (ev) => {
        const d = ev.data;
        if (typeof d === 'string') h.onMessage(d);
        else if (d instanceof ArrayBuffer) h.onMessage(new Uint8Array(d));
        else if (ArrayBuffer.isView(d)) h.onMessage(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
      };
      const close = (code: number, reason: string): void => {
        if (closed) return;
        closed = true;
        h.onClose(code, reason);
      };
      ws.onclose = (ev) => close(ev.code, ev.reason);
      // An error is followed by a close event; a socket that never opened may only error.
      ws.onerror = () => close(1006, 'transport error');
      return {
        send: (data) => ws.send(data),
        close: (code, reason) => {
          try {
            ws.close(code, reason);
          } finally {
            close(code ?? 1000, reason ?? '');
          }
        },
      };
    },
  };
}
