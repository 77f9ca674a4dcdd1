/**
 * WebSocket connections: a device binds its connection by signing a fresh server
 * challenge with its identity key, after presenting its user's token. Until then the
 * connection can do nothing but authenticate, and it is closed if it doesn't within
 * AUTH_TIMEOUT_MS. One connection per device: a newer one replaces the older.
 */
import type { WebSocket } from 'uWebSockets.js';
import type { CryptoBackend } from '../../crypto/primitives/backend.js';
import { CLOSE_CODES, ProtocolError } from '../../protocol/errors.js';
import { type ClientFrame, type ServerFrame, decodeClientFrame, encodeServerFrame } from '../../protocol/frames.js';
import { AUTH_TIMEOUT_MS, CHALLENGE_BYTES } from '../../protocol/limits.js';
import { deviceAuthTranscript } from '../../protocol/transcripts.js';
import type { TokenVerifier } from '../auth/tokens.js';
import type { DirectoryStore } from '../directory/store.js';
import type { Logger } from 'pino';
import type { RelayMetrics } from '../metrics.js';

export interface ConnectionData {
  readonly challenge: Uint8Array;
  state: 'challenge' | 'authenticating' | 'authenticated';
  userId: string | undefined;
  deviceId: string | undefined;
  closed: boolean;
  authTimer: NodeJS.Timeout | undefined;
}

export type RelaySocket = WebSocket<ConnectionData>;

export interface ConnectionDeps {
  readonly verifier: TokenVerifier;
  readonly directory: DirectoryStore;
  readonly backend: CryptoBackend;
  readonly metrics: RelayMetrics;
  readonly logger: Logger;
  readonly random: (n: number) => Uint8Array;
}

function deviceKey(userId: string, deviceId: string): string {
  return `${userId}\u0000${deviceId}`;
}

export class ConnectionManager {
  /** Every open socket, for shutdown. */
  readonly open = new Set<RelaySocket>();
  /** Authenticated sockets by device. */
  private readonly byDevice = new Map<string, RelaySocket>();

  constructor(private readonly deps: ConnectionDeps) {}

  newConnectionData(): ConnectionData {
    return { challenge: this.deps.random(CHALLENGE_BYTES), state: 'challenge', userId: undefined, deviceId: undefined, closed: false, authTimer: undefined };
  }

  onOpen(ws: RelaySocket): void {
    const ud = ws.getUserData();
    this.open.add(ws);
    this.deps.metrics.connectionsOpen.inc();
    ud.authTimer = setTimeout(() => {
      if (!ud.closed && ud.state !== 'authenticated') {
        this.sendError(ws, new ProtocolError('AUTH_TIMEOUT', 'not authenticated in time'));
        ws.end(CLOSE_CODES.AUTH_FAILED, 'auth timeout');
      }
    }, AUTH_TIMEOUT_MS);
    this.send(ws, { type: 'challenge', nonce: ud.challenge });
  }

  onClose(ws: RelaySocket): void {
    const ud = ws.getUserData();
    ud.closed = true;
    if (ud.authTimer) clearTimeout(ud.authTimer);
    this.open.delete(ws);
    this.deps.metrics.connectionsOpen.dec();
    if (ud.userId !== undefined && ud.deviceId !== undefined) {
      const key = deviceKey(ud.userId, ud.deviceId);
      if (this.byDevice.get(key) === ws) this.byDevice.delete(key);
    }
  }

  /** The message buffer is only valid synchronously: it is decoded before any await. */
  onMessage(ws: RelaySocket, message: ArrayBuffer): void {
    let frame: ClientFrame;
    try {
      frame = decodeClientFrame(new Uint8Array(message));
    } catch (err) {
      this.deps.metrics.framesIn.inc({ type: 'invalid' });
      this.sendError(ws, err);
      return;
    }
    this.deps.metrics.framesIn.inc({ type: frame.type });
    const ud = ws.getUserData();
    switch (frame.type) {
      case 'auth':
        if (ud.state !== 'challenge') {
          this.sendError(ws, new ProtocolError('ALREADY_AUTHENTICATED', 'this connection is already authenticated or authenticating'));
          return;
        }
        ud.state = 'authenticating';
        void this.authenticate(ws, frame);
        return;
      case 'ping':
        this.send(ws, { type: 'pong', id: frame.id });
        return;
    }
  }

  private async authenticate(ws: RelaySocket, frame: Extract<ClientFrame, { type: 'auth' }>): Promise<void> {
    const ud = ws.getUserData();
    try {
      const userId = await this.deps.verifier.verify(frame.token);
      // The device is looked up under the token's user only: a valid token for one user
      // can never bind another user's device, whatever the signature.
      const device = await this.deps.directory.getDevice(userId, frame.deviceId);
      if (!device) throw new ProtocolError('DEVICE_NOT_FOUND', 'no such device for this user');
      const transcript = deviceAuthTranscript(ud.challenge, userId, frame.deviceId);
      if (!this.deps.backend.ed25519Verify(frame.signature, transcript, device.identityKey)) {
        throw new ProtocolError('CHALLENGE_FAILED', 'the challenge signature does not verify with the device identity key');
      }
      if (ud.closed) return;
      ud.state = 'authenticated';
      ud.userId = userId;
      ud.deviceId = frame.deviceId;
      if (ud.authTimer) clearTimeout(ud.authTimer);
      const key = deviceKey(userId, frame.deviceId);
      const previous = this.byDevice.get(key);
      this.byDevice.set(key, ws);
      if (previous && previous !== ws) previous.end(CLOSE_CODES.REPLACED, 'replaced by a newer connection');
      this.send(ws, { type: 'auth_ok', userId, deviceId: frame.deviceId });
      this.deps.logger.debug({ userId, deviceId: frame.deviceId }, 'device authenticated');
    } catch (err) {
      if (ud.closed) return;
      this.sendError(ws, err);
      ws.end(CLOSE_CODES.AUTH_FAILED, 'authentication failed');
    }
  }

  send(ws: RelaySocket, frame: ServerFrame): void {
    if (ws.getUserData().closed) return;
    ws.cork(() => {
      ws.send(encodeServerFrame(frame), false);
    });
    this.deps.metrics.framesOut.inc({ type: frame.type });
  }

  sendError(ws: RelaySocket, err: unknown): void {
    const pe = toProtocolError(err, this.deps.logger);
    this.deps.metrics.errors.inc({ code: pe.code });
    const id = typeof pe.details?.id === 'number' ? pe.details.id : undefined;
    this.send(ws, { type: 'error', code: pe.code, message: pe.message, ...(id !== undefined ? { id } : {}) });
  }

  closeAll(code: number, reason: string): void {
    for (const ws of [...this.open]) {
      if (!ws.getUserData().closed) ws.end(code, reason);
    }
  }
}

export function toProtocolError(err: unknown, logger: Logger): ProtocolError {
  if (err instanceof ProtocolError) return err;
  logger.error({ err: { message: (err as Error)?.message, stack: (err as Error)?.stack } }, 'internal error');
  return new ProtocolError('INTERNAL', 'internal error');
}
