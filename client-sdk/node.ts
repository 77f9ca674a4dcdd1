/**
 * hermetic/client for Node: everything of the universal entry, plus the file store and a
 * createClient that uses the `ws` package where the runtime has no WebSocket (Node 20).
 */
import { WebSocket as NodeWebSocket } from 'ws';
import { type ClientOptions, type HermeticClient, createClient as createUniversalClient } from './client.js';
import { type WebSocketConstructor, webSocketTransport } from './transport/transport.js';

export * from './index.js';
export { FileStore } from './stores/file.js';

/** createClient, with the `ws` package as the transport when the runtime has no WebSocket. */
export function createClient(options: ClientOptions): Promise<HermeticClient> {
  const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  const transport = options.transport ?? webSocketTransport(global ?? (NodeWebSocket as unknown as WebSocketConstructor));
  return createUniversalClient({ ...options, transport });
}
