/** Placeholder replaced once the relay's log store lands. */
export async function appendPhase(_opts: unknown): Promise<Record<string, number>> {
  throw new Error('the append phase needs the relay log');
}
