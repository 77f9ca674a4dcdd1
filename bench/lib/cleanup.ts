/**
 * Cleanup for benchmarks that start processes, create databases and temporary
 * directories: each resource registers an undo step as it is made, and the steps run in
 * reverse order when the run ends, when it fails, or when the process is interrupted
 * (SIGINT/SIGTERM), so an aborted run leaves nothing behind.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export class Cleanup {
  private readonly steps: Array<{ what: string; fn: () => Promise<void> | void }> = [];
  private running: Promise<void> | undefined;
  private readonly onSignal = (signal: NodeJS.Signals): void => {
    console.error(`\n${signal}: cleaning up`);
    void this.run().finally(() => process.exit(130));
  };

  constructor() {
    process.once('SIGINT', this.onSignal);
    process.once('SIGTERM', this.onSignal);
  }

  /** Registers an undo step; returns a function that runs it early (once). */
  add(what: string, fn: () => Promise<void> | void): () => Promise<void> {
    let done = false;
    const step = {
      what,
      fn: async () => {
        if (done) return;
        done = true;
        await fn();
      },
    };
    this.steps.push(step);
    return async () => {
      await step.fn();
      const i = this.steps.indexOf(step);
      if (i >= 0) this.steps.splice(i, 1);
    };
  }

  /** A fresh temporary directory (`hermetic-bench-<label>-...`), removed with everything else. */
  tempDir(label: string): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `hermetic-bench-${label}-`));
    this.add('remove temporary directory', () => fs.rmSync(dir, { recursive: true, force: true }));
    return dir;
  }

  /** Runs every remaining step, newest first; a failing step is reported, not fatal. */
  run(): Promise<void> {
    this.running ??= (async () => {
      while (this.steps.length > 0) {
        const step = this.steps.pop()!;
        try {
          await step.fn();
        } catch (err) {
          console.error(`cleanup: ${step.what} failed: ${(err as Error).message}`);
        }
      }
      process.off('SIGINT', this.onSignal);
      process.off('SIGTERM', this.onSignal);
    })();
    return this.running;
  }
}
