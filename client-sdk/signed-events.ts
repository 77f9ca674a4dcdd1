/**
 * Signed events in the SDK (the format is crypto/evidence/event.ts).
 *
 * Sending: each (this device, source, recipient user) has a hash chain — sequence n+1
 * names the SHA-256 of event n's JWS — kept in the store and advanced in the same
 * transaction that puts the event in the outbox, so the chain each recipient sees has no
 * hole of our making (events of one source to other users are other chains).
 *
 * Receiving: the JWS is verified with the sending device's verified identity key and must
 * name that device as its signer; the chain per (sender device, source, conversation) is
 * checked (a jump is a GAP, a previous hash that does not match is EVENT_CHAIN_BROKEN);
 * and (signer user, source, id) is an idempotency key: the same event again (its content
 * compared in canonical JSON) is not offered twice, the same key with other content is
 * EVENT_ID_REUSED. One user's events never collide with another's: `source` is the
 * signer's own name for it. The JWS is kept verbatim with the message.
 */
import { EvidenceError } from '../crypto/evidence/errors.js';
import { type EventInput, type SignedEvent, eventHash, signEvent, validateEvent, verifyEvent } from '../crypto/evidence/event.js';
import type { IdentityKey, IdentityKeyPair } from '../crypto/identity/identity-key.js';
import type { CryptoBackend } from '../crypto/primitives/backend.js';
import { encodeBase64url } from '../protocol/base64url.js';
import { canonicalJson } from '../crypto/evidence/json.js';
import type { FlagCode } from './flags.js';
import { NS, type StoreTx, decodeRecord, encodeRecord } from './stores/store.js';

interface ChainState {
  v: 1;
  seq: number;
  hash: string;
  /** When it last moved (for pruning; absent in records of earlier versions). */
  at?: number;
}

interface SeenEvent {
  v: 1;
  content: string;
  hash: string;
  at: number;
}

export type ReceivedEvent =
  | { readonly ok: true; readonly event: SignedEvent; readonly hash: string; readonly flags: FlagCode[]; readonly duplicate: boolean; readonly evidence: Record<string, unknown> }
  | { readonly ok: false; readonly detail: string; readonly error: string };

const encoder = new TextEncoder();

export class SignedEvents {
  constructor(
    private readonly backend: CryptoBackend,
    private readonly identity: IdentityKeyPair,
    private readonly userId: string,
    private readonly deviceId: string,
  ) {}

  #digest(s: string): string {
    return encodeBase64url(this.backend.sha256(encoder.encode(s)));
  }

  /** The default source: this device. */
  get defaultSource(): string {
    return `urn:hermetic:${this.userId}:${this.deviceId}`;
  }

  /**
   * Signs the next event of its source's chain. Returns the JWS and a `commit` that
   * advances the chain; call it in the transaction that stores the event for sending.
   * Throws EvidenceError INVALID_EVENT for input off the schema.
   */
  async sign(tx: StoreTx, input: EventInput, to: string, now: number): Promise<{ jws: string; event: SignedEvent; commit: (tx: StoreTx) => void }> {
    const source = input.source ?? this.defaultSource;
    const key = `o:${this.#digest(`${source}\u0000${to}`)}`;
    const raw = await tx.get(NS.events, key);
    const prev = raw ? decodeRecord<ChainState>(raw) : undefined;
    const event = validateEvent({
      specversion: '1.0',
      id: input.id,
      source,
      type: input.type,
      time: input.time ?? new Date(now).toISOString(),
      ...(input.subject === undefined ? {} : { subject: input.subject }),
      datacontenttype: 'application/json',
      data: input.data,
      sequence: (prev?.seq ?? 0) + 1,
      ...(prev === undefined ? {} : { previoushash: prev.hash }),
      signeruser: this.userId,
      signerdevice: this.deviceId,
    });
    const jws = signEvent(this.identity, event, this.backend);
    const hash = eventHash(jws, this.backend);
    return { jws, event, commit: (t) => t.put(NS.events, key, encodeRecord({ v: 1, seq: event.sequence, hash, at: now } satisfies ChainState)) };
  }

  /** A signed event from `from`, whose verified identity key is `key`. */
  async receive(tx: StoreTx, jws: string, from: { userId: string; deviceId: string }, conversation: string, key: IdentityKey, now: number): Promise<ReceivedEvent> {
    let event: SignedEvent;
    try {
      event = verifyEvent(jws, key, this.backend).event;
    } catch (err) {
      if (!(err instanceof EvidenceError)) throw err;
      return { ok: false, detail: `a signed event that does not verify: ${err.message}`, error: err.code };
    }
    if (event.signeruser !== from.userId || event.signerdevice !== from.deviceId) {
      return { ok: false, detail: `a signed event naming ${event.signeruser}/${event.signerdevice} as its signer came from ${from.userId}/${from.deviceId}`, error: 'INVALID_EVENT' };
    }
    const hash = eventHash(jws, this.backend);
    const flags: FlagCode[] = [];
    const evidence: Record<string, unknown> = { source: event.source, id: event.id, sequence: event.sequence, eventSha256: hash };
    // The chain of this device and source.
    const chainKey = `c:${from.userId} ${from.deviceId} ${this.#digest(`${event.source}\u0000${conversation}`)}`;
    const raw = await tx.get(NS.events, chainKey);
    const prev = raw ? decodeRecord<ChainState>(raw) : undefined;
    if (prev !== undefined) {
      if (event.sequence === prev.seq + 1 && event.previoushash !== prev.hash) {
        flags.push('EVENT_CHAIN_BROKEN');
        evidence.expectedPrevious = prev.hash;
        evidence.previoushash = event.previoushash;
      } else if (event.sequence > prev.seq + 1) {
        flags.push('GAP');
        evidence.missing = { from: prev.seq + 1, to: event.sequence - 1 };
      }
    }
    if (prev === undefined || event.sequence > prev.seq) tx.put(NS.events, chainKey, encodeRecord({ v: 1, seq: event.sequence, hash, at: now } satisfies ChainState));
    // The idempotency key: the signer's user, its source, its id.
    const seenKey = `d:${this.#digest(`${from.userId}\u0000${event.source}\u0000${event.id}`)}`;
    const content = this.#digest(canonicalJson([event.type, event.subject ?? null, event.data]));
    const seenRaw = await tx.get(NS.events, seenKey);
    const seen = seenRaw ? decodeRecord<SeenEvent>(seenRaw) : undefined;
    let duplicate = false;
    if (seen !== undefined) {
      duplicate = true;
      if (seen.content !== content) {
        flags.push('EVENT_ID_REUSED');
        evidence.firstEventSha256 = seen.hash;
      }
    } else {
      tx.put(NS.events, seenKey, encodeRecord({ v: 1, content, hash, at: now } satisfies SeenEvent));
    }
    return { ok: true, event, hash, flags, duplicate, evidence };
  }

  /** Forgets idempotency keys and others' chains older than `cutoff` (ms), and the oldest beyond `max`. */
  async prune(tx: StoreTx, cutoff: number, max: number): Promise<void> {
    for (const prefix of ['d:', 'c:']) {
      const rows = (await tx.list(NS.events, prefix)).map(([k, v]) => ({ k, at: decodeRecord<{ at?: number }>(v).at ?? 0 })).sort((a, b) => a.at - b.at);
      const excess = rows.length - max;
      rows.forEach((r, i) => {
        if (r.at < cutoff || i < excess) tx.delete(NS.events, r.k);
      });
    }
  }
}
