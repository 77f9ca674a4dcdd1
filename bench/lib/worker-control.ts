/**
 * The child's side of the load generator messages (bench/lib/load.ts): setup (answered
 * `ready` when `setup` resolves, `fatal` when it fails), start, measure, stop (answered
 * with the window's report), close (disconnect and exit). The process exits when its
 * parent goes away.
 */
import type { ParentMessage } from './load-protocol.js';

export interface WorkerControl<S, R extends { readonly type: 'report' }> {
  /** Connects (and whatever else comes before the run); resolves when ready to start. */
  setup(s: S): Promise<void>;
  /** Begins sending: the warm-up. */
  start(): void;
  /** Zeroes the counters: the measured window begins. */
  measure(): void;
  /** Ends the window and stops sending: its report. */
  stop(): R;
  /** Disconnects everything. */
  close(): Promise<void>;
}

type Message<S> = Exclude<ParentMessage, { type: 'setup' }> | { readonly type: 'setup'; readonly setup: S };
type Answer<R> = R | { readonly type: 'ready' } | { readonly type: 'fatal'; readonly message: string };

export function serveWorker<S, R extends { readonly type: 'report' }>(w: WorkerControl<S, R>): void {
  const reply = (m: Answer<R>): void => {
    process.send?.(m);
  };
  process.on('message', (m: Message<S>) => {
    switch (m.type) {
      case 'setup':
        w.setup(m.setup).then(
          () => reply({ type: 'ready' }),
          (err: unknown) => reply({ type: 'fatal', message: (err as Error).message }),
        );
        return;
      case 'start':
        w.start();
        return;
      case 'measure':
        w.measure();
        return;
      case 'stop':
        reply(w.stop());
        return;
      case 'close':
        void w.close().finally(() => process.exit(0));
        return;
    }
  });
  process.on('disconnect', () => process.exit(0));
}
