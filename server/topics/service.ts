/**
 * The relay's topic upkeep: a retirement pass (TopicStore.retire) every
 * TOPIC_RETIREMENT_INTERVAL_MS, one at a time, its failures logged and retried at the
 * next pass. So a topic's messages are gone at most its retention age, plus one slice,
 * plus this interval after they were published.
 */
import type { Logger } from 'pino';
import type { TopicRetirement, TopicStore } from './store.js';

export const TOPIC_RETIREMENT_INTERVAL_MS = 5000;

export class TopicService {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    readonly store: TopicStore,
    private readonly deps: { readonly logger: Logger; readonly onRetired?: (r: TopicRetirement) => void; readonly intervalMs?: number },
  ) {}

  start(): void {
    this.timer ??= setInterval(() => void this.pass(), this.deps.intervalMs ?? TOPIC_RETIREMENT_INTERVAL_MS).unref();
  }

  /** One retirement pass, unless one is running (then that one). */
  pass(): Promise<void> {
    this.running ??= (async () => {
      try {
        const r = await this.store.retire();
        this.deps.onRetired?.(r);
        if (r.deferred > 0) this.deps.logger.warn({ deferred: r.deferred }, 'topic slices not dropped: their lock was busy (tried again at the next pass)');
      } catch (err) {
        this.deps.logger.error({ err: { message: (err as Error).message } }, 'topic retirement pass failed (tried again at the next pass)');
      } finally {
        this.running = undefined;
      }
    })();
    return this.running;
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
