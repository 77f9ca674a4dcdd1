/**
 * Clients that vanish: one that does the WebSocket handshake by hand, authenticates (or
 * not), writes half of a large binary SEND frame (or half of a frame header) and drops
 * the socket; and one that stops reading and disappears without a FIN (a TCP proxy
 * blackholes it) while the relay has envelopes to push to it. The relay stays up,
 * nothing of the cut-off SEND is stored, devices connected meanwhile keep sending and
 * receiving, and the connection gauge comes back to what it was (the silent peer is
 * dropped by the idle timeout, its envelopes kept for its next connection).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemRandom } from '../../crypto/primitives/random.js';
import { encodeSend } from '../../protocol/envelopes.js';
import { HandmadeWs, OPCODE, clientFrame } from '../helpers/raw-ws.js';
import { pgMissing, pgServer } from '../helpers/pg.js';
import { killAllRelays } from '../helpers/relay.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { RawClient } from '../mailbox/raw-client.js';
import { POSTGRES, type TestUser, World, firstDevice, metric, sendMany, sleep, targetsFor, text } from '../mailbox/world.js';

afterAll(async () => {
  await killAllRelays();
});

/** The relay's idle timeout here: its minimum, so that a silent peer goes quickly. */
const IDLE_TIMEOUT_S = 8;
const GAUGE = 'hermetic_connections_open';

describe('clients that vanish mid-frame or without a FIN', () => {
  // On PostgreSQL only for a quick start: nothing here depends on the storage driver.
  if (!pgServer) {
    pgMissing('clients that vanish mid-frame or without a FIN');
    return;
  }

  let world: World;

  beforeAll(async () => {
    world = await World.start(POSTGRES, { env: { HERMETIC_WS_IDLE_TIMEOUT_S: String(IDLE_TIMEOUT_S) } });
  });

  afterAll(async () => {
    await world?.stop();
  });

  const gauge = async (): Promise<number> => (await metric(world.relay, GAUGE)) ?? 0;

  const waitGauge = async (want: number, timeoutMs: number): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await gauge();
      if (v === want) return;
      if (Date.now() > deadline) throw new Error(`${GAUGE} is ${v}, expected ${want}`);
      await sleep(100);
    }
  };

  /** Two devices that stay connected through the fault and must keep working. */
  const bystanders = async (): Promise<{ exchange: (label: string) => Promise<void> }> => {
    const carol = await world.user('carol');
    const dave = await world.user('dave');
    const sender = await world.connect(carol);
    const reader = await world.connect(dave, undefined, { autoAck: true });
    await reader.waitJson((f) => f.type === 'queue_empty');
    return {
      exchange: async (label) => {
        const before = reader.delivered.length;
        await sendMany(sender, dave, 20, label);
        await reader.waitDelivered(before + 20);
        expect(reader.delivered.slice(before).map((d) => text(d.payload))).toEqual(Array.from({ length: 20 }, (_, i) => `${label} ${i}`));
      },
    };
  };

  /** What `user`'s first device gets on connecting: the mailbox's backlog. */
  const backlogOf = async (user: TestUser): Promise<RawClient> => {
    const c = await world.connect(user, undefined, { autoAck: true });
    await c.waitJson((f) => f.type === 'queue_empty');
    return c;
  };

  type Cut = { name: string; auth: boolean; bytes: (frame: Buffer) => Buffer };
  const cuts: Cut[] = [
    { name: 'unauthenticated, half of a large binary frame', auth: false, bytes: (f) => f.subarray(0, f.length >> 1) },
    { name: 'authenticated, half of a large binary SEND', auth: true, bytes: (f) => f.subarray(0, f.length >> 1) },
    // The opcode byte and the first of the 64-bit length's bytes: not even a whole header.
    { name: 'authenticated, half of a frame header', auth: true, bytes: (f) => f.subarray(0, 3) },
  ];

  it.each(cuts)('$name, then the socket dropped: relay up, nothing stored, others unaffected', async (cut) => {
    const others = await bystanders();
    const mallory = await world.user('mallory');
    const erin = await world.user('erin', 3);
    const prior = await gauge();

    const ws = await HandmadeWs.connect(world.relay.port);
    if (cut.auth) await ws.authenticate(firstDevice(mallory), mallory.token);
    else await ws.waitJson((f) => f.type === 'challenge');
    await waitGauge(prior + 1, 10_000);
    // ~600 KB: three targets of 200 KB, well within the frame and envelope limits.
    const send = encodeSend({ id: 1, envelopeId: systemRandom(16), ttlSeconds: 3600, recipientUserId: erin.userId, targets: targetsFor(erin, () => systemRandom(200_000)) });
    const frame = clientFrame(OPCODE.binary, send);
    expect(frame.length).toBeGreaterThan(600_000);
    await ws.write(cut.bytes(frame));
    await others.exchange('while cut off');
    ws.destroy();

    await waitGauge(prior, 10_000);
    await world.expectRelaysUp();
    expect(world.relay.logs().filter((l) => l.msg === 'internal error')).toEqual([]);
    await others.exchange('after the drop');
    // Nothing of the cut-off SEND was stored for any of the recipient's devices.
    const reader = await backlogOf(erin);
    expect(reader.stream()).toEqual(['queue_empty 0']);
    expect(ws.json.filter((f) => f.type === 'stored' || f.type === 'error')).toEqual([]);
    world.closeClients();
  });

  it('a recipient that stops reading and vanishes without a FIN is dropped by the idle timeout; its envelopes wait for it', async () => {
    const others = await bystanders();
    const grace = await world.user('grace');
    const frank = await world.user('frank');
    const sender = await world.connect(grace);
    // frank reaches the relay through a proxy that can hide his disappearance.
    const proxy = await TcpProxy.start({ host: '127.0.0.1', port: world.relay.port });
    try {
      const prior = await gauge();
      const vanishing = await RawClient.connect(`ws://127.0.0.1:${proxy.port}/v1/ws`, firstDevice(frank), frank.token);
      await vanishing.waitJson((f) => f.type === 'queue_empty');
      await waitGauge(prior + 1, 10_000);
      // Gone: nothing more is read or acknowledged, and no FIN or RST reaches the relay.
      proxy.blackhole();
      vanishing.terminate();
      // Envelopes keep coming for him (~2.5 MB: more than the relay will buffer).
      await sendMany(sender, frank, 40, 'for frank', { size: 64 * 1024 });
      await others.exchange('while frank is silent');
      // The idle timeout (with its ping unanswered) closes the relay's side.
      await waitGauge(prior, (IDLE_TIMEOUT_S * 3 + 10) * 1000);
      await world.expectRelaysUp();
      expect(world.relay.logs().filter((l) => l.msg === 'internal error')).toEqual([]);
      await others.exchange('after frank is dropped');
    } finally {
      proxy.open();
      await proxy.close();
    }
    // Nothing was lost: all 40 wait for frank's next connection.
    const back = await world.connect(frank, undefined, { autoAck: true });
    await back.waitDelivered(40);
    expect(back.delivered.map((d) => text(d.payload))).toEqual(Array.from({ length: 40 }, (_, i) => `for frank ${i}`));
    world.closeClients();
  });
});
