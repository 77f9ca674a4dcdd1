/**
 * The benchmark's side of the load generators: forks them (each a separate Node process
 * running bench/lib/load-generator.ts, or another worker module speaking the same
 * messages, such as bench/lib/sdk-worker.ts), hands each its setup, and steps them
 * together through warm-up, measurement and shutdown.
 */
import { type ChildProcess, fork } from 'node:child_process';
import type { GeneratorReport, GeneratorSetup, ParentMessage } from './load-protocol.js';

/** The messages of a worker module: `setup` carries its own setup type, `report` its own report. */
type WorkerParentMessage<S> = Exclude<ParentMessage, { type: 'setup' }> | { readonly type: 'setup'; readonly setup: S };
type WorkerChildMessage = { readonly type: string; readonly message?: string };

const GENERATOR = new URL('./load-generator.ts', import.meta.url);
const REPLY_TIMEOUT_MS = 60_000;

/**
 * A forked worker process spoken to by messages: `request` posts one and waits for the
 * answer of the type wanted (a `fatal` answer fails every wait), `close` asks it to exit.
 */
export class WorkerProcess<Req extends { readonly type: string }, Ans extends { readonly type: string; readonly message?: string } = WorkerChildMessage> {
  private readonly waiters: Array<{ want: string; resolve: (m: Ans) => void; reject: (e: Error) => void }> = [];
  private exited = false;

  constructor(
    readonly proc: ChildProcess,
    /** Names the worker in errors. */
    private readonly name = 'load generator',
    private readonly replyTimeoutMs = REPLY_TIMEOUT_MS,
  ) {
    proc.on('message', (m: Ans) => {
      if (m.type === 'fatal') {
        for (const w of this.waiters.splice(0)) w.reject(new Error(`${this.name}: ${m.message}`));
        return;
      }
      const i = this.waiters.findIndex((w) => w.want === m.type);
      if (i >= 0) this.waiters.splice(i, 1)[0]!.resolve(m);
    });
    proc.on('exit', (code) => {
      this.exited = true;
      for (const w of this.waiters.splice(0)) w.reject(new Error(`${this.name} exited (code ${code})`));
    });
  }

  get pid(): number {
    return this.proc.pid as number;
  }

  post(m: Req): void {
    if (!this.exited) this.proc.send(m);
  }

  request<T extends Ans>(m: Req, want: Ans['type']): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name}: no ${want} within ${this.replyTimeoutMs} ms`)), this.replyTimeoutMs);
      this.waiters.push({
        want,
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.post(m);
    });
  }

  /** Posts `close` and waits for the exit; kills the process after `killAfterMs`. */
  async close(close: Req, killAfterMs = 5000): Promise<void> {
    if (this.exited) return;
    const done = new Promise<void>((r) => this.proc.once('exit', () => r()));
    this.post(close);
    const kill = setTimeout(() => this.proc.kill('SIGKILL'), killAfterMs);
    await done;
    clearTimeout(kill);
  }
}

type Generator<S> = WorkerProcess<WorkerParentMessage<S>>;

export interface WorkerOptions {
  /** The worker module (default: the raw-protocol load generator). */
  readonly module?: URL;
  /** Extra Node flags for the workers (e.g. --cpu-prof). */
  readonly execArgv?: readonly string[];
}

export class LoadGenerators<S = GeneratorSetup, R extends { readonly type: 'report' } = GeneratorReport> {
  private constructor(private readonly gens: Array<Generator<S>>) {}

  /** Forks one process per setup and waits until every connection is authenticated. */
  static async start<S = GeneratorSetup, R extends { readonly type: 'report' } = GeneratorReport>(
    setups: readonly S[],
    register: (close: () => Promise<void>) => void,
    opts: WorkerOptions = {},
  ): Promise<LoadGenerators<S, R>> {
    const gens = setups.map(
      (): Generator<S> => new WorkerProcess<WorkerParentMessage<S>>(fork(opts.module ?? GENERATOR, [], { execArgv: [...(opts.execArgv ?? []), '--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })),
    );
    const lg = new LoadGenerators<S, R>(gens);
    register(() => lg.close());
    await Promise.all(gens.map((g, i) => g.request({ type: 'setup', setup: setups[i]! }, 'ready')));
    return lg;
  }

  get pids(): number[] {
    return this.gens.map((g) => g.pid);
  }

  startSending(): void {
    for (const g of this.gens) g.post({ type: 'start' });
  }

  beginMeasure(): void {
    for (const g of this.gens) g.post({ type: 'measure' });
  }

  stop(): Promise<R[]> {
    return Promise.all(this.gens.map((g) => g.request<R>({ type: 'stop' }, 'report')));
  }

  async close(): Promise<void> {
    await Promise.all(this.gens.map((g) => g.close({ type: 'close' })));
  }
}
