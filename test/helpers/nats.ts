/**
 * NATS for integration tests: NATS_URL when set, else a local server on
 * 127.0.0.1:4222, found once per test file. Each suite gets its own subject prefix, so
 * suites (and their relays) never hear each other's notices.
 *
 * Without a reachable server the NATS suites are skipped with a visible reason, unless
 * HERMETIC_TEST_REQUIRE_NATS=1, in which case they fail.
 */
import crypto from 'node:crypto';
import { type NatsConnection, connect } from '@nats-io/transport-node';
import { it } from 'vitest';

export const natsUrl = process.env.NATS_URL || 'nats://127.0.0.1:4222';

async function probe(): Promise<string | undefined> {
  try {
    const nc = await connect({ servers: natsUrl.replace(/^nats:\/\//, ''), timeout: 3000, reconnect: false });
    await nc.flush();
    await nc.close();
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

const failure = await probe();

/** Whether a NATS server answers. */
export const natsAvailable = failure === undefined;
export const natsRequired = process.env.HERMETIC_TEST_REQUIRE_NATS === '1';

/**
 * Call inside a describe block whose tests need NATS, when `natsAvailable` is false:
 * registers a visible skipped test naming the reason, or a failing one when NATS is
 * required.
 */
export function natsMissing(what: string): void {
  const message = `${what} requires NATS, which is not reachable at ${natsUrl} (${failure}); set NATS_URL or run nats-server on 127.0.0.1:4222`;
  if (natsRequired) {
    it(`${what}: NATS is reachable (HERMETIC_TEST_REQUIRE_NATS=1)`, () => {
      throw new Error(message);
    });
  } else {
    it.skip(message, () => undefined);
  }
}

/** A subject prefix no other suite uses. */
export function natsPrefix(): string {
  return `hermetic-test.${process.pid}-${crypto.randomBytes(6).toString('hex')}`;
}

/** The relay variables of a fleet on NATS (`url` may go through a proxy). */
export function natsEnv(prefix: string, url: string = natsUrl): Record<string, string> {
  return { HERMETIC_NATS_URL: url, HERMETIC_NATS_SUBJECT_PREFIX: prefix };
}

/** A connection of the test's own, to publish or listen on a fleet's subject. */
export function natsClient(): Promise<NatsConnection> {
  return connect({ servers: natsUrl.replace(/^nats:\/\//, ''), timeout: 3000 });
}
