/**
 * A TCP proxy a test controls, for network faults between two real processes (a relay
 * and PostgreSQL, a client and a relay). Each accepted connection is paired with one to
 * the target and bytes are forwarded both ways, until the test changes the mode:
 *
 * - `cut()` destroys every connection, both sides, at once (as a reset would);
 * - `refuse()` closes each new connection as soon as it is accepted;
 * - `blackhole()` lets nothing through either way, on existing and new connections:
 *   sockets stop being read, so the peers' writes back up as they would across a
 *   partition, and closes are not passed on (a peer that vanishes sends no FIN);
 * - `open()` forwards again: what was held goes through, held connections are
 *   connected to the target, and closes that were hidden are passed on.
 */
import net from 'node:net';

export type ProxyMode = 'open' | 'refuse' | 'blackhole';

interface Pair {
  readonly down: net.Socket;
  up: net.Socket | undefined;
  /** Ends that arrived during a blackhole, passed on when it lifts. */
  readonly heldEnds: Array<() => void>;
}

export class TcpProxy {
  private readonly pairs = new Set<Pair>();
  private modeNow: ProxyMode = 'open';
  /** Connections accepted since the start. */
  accepted = 0;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
    private target: { readonly host: string; readonly port: number },
  ) {
    server.on('connection', (down) => this.onConnection(down));
  }

  /** Listens on a free 127.0.0.1 port, forwarding to `target`. */
  static async start(target: { host: string; port: number }): Promise<TcpProxy> {
    const server = net.createServer({ pauseOnConnect: true });
    const port = await new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
    });
    return new TcpProxy(server, port, target);
  }

  /** Forwards connections made from now on to `target` (e.g. a restarted server). */
  retarget(target: { host: string; port: number }): void {
    this.target = target;
  }

  /** Rewrites a URL's host and port to go through this proxy. */
  via(url: string): string {
    const u = new URL(url);
    u.hostname = '127.0.0.1';
    u.port = String(this.port);
    return u.toString();
  }

  get mode(): ProxyMode {
    return this.modeNow;
  }

  /** Connections currently held open by the proxy. */
  get connections(): number {
    return this.pairs.size;
  }

  open(): void {
    this.modeNow = 'open';
    for (const pair of [...this.pairs]) {
      if (pair.down.destroyed || pair.up?.destroyed) {
        this.drop(pair);
        continue;
      }
      for (const end of pair.heldEnds.splice(0)) end();
      if (!pair.up) this.connectUp(pair);
      else {
        pair.down.resume();
        pair.up.resume();
      }
    }
  }

  refuse(): void {
    this.modeNow = 'refuse';
  }

  blackhole(): void {
    this.modeNow = 'blackhole';
    for (const pair of this.pairs) {
      pair.down.pause();
      pair.up?.pause();
    }
  }

  cut(): void {
    for (const pair of [...this.pairs]) this.drop(pair);
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private onConnection(down: net.Socket): void {
    this.accepted++;
    if (this.modeNow === 'refuse') {
      down.destroy();
      return;
    }
    const pair: Pair = { down, up: undefined, heldEnds: [] };
    this.pairs.add(pair);
    down.on('error', () => undefined);
    down.on('close', () => this.onClose(pair));
    // Accepted paused (pauseOnConnect): nothing is read until it is forwarded.
    if (this.modeNow === 'open') this.connectUp(pair);
  }

  private connectUp(pair: Pair): void {
    const up = net.connect(this.target.port, this.target.host);
    pair.up = up;
    up.on('error', () => undefined);
    up.on('close', () => this.onClose(pair));
    up.on('connect', () => {
      if (!this.pairs.has(pair)) return;
      this.forward(pair, pair.down, up);
      this.forward(pair, up, pair.down);
      if (this.modeNow === 'blackhole') up.pause();
      else pair.down.resume();
    });
  }

  /** One side closed: the other is closed too, unless a blackhole hides it for now. */
  private onClose(pair: Pair): void {
    if (this.modeNow === 'blackhole') return;
    this.drop(pair);
  }

  private drop(pair: Pair): void {
    this.pairs.delete(pair);
    pair.down.destroy();
    pair.up?.destroy();
  }

  /** Copies `from` to `to`, pausing `from` while `to` is full; an end is passed on (a
   * paused socket still reports the peer's FIN, so a blackhole holds it back). */
  private forward(pair: Pair, from: net.Socket, to: net.Socket): void {
    from.on('data', (chunk: Buffer) => {
      if (!to.write(chunk)) {
        from.pause();
        to.once('drain', () => {
          if (this.modeNow !== 'blackhole') from.resume();
        });
      }
    });
    from.on('end', () => {
      if (this.modeNow === 'blackhole') pair.heldEnds.push(() => to.end());
      else to.end();
    });
  }
}
