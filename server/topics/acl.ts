/**
 * Who may do what on which topics: the `hermetic_topics` claim of the user's JWT, issued
 * by the embedding app (docs/PROTOCOL.md, "Topic access"):
 *
 *   "hermetic_topics": { "create": ["bank-a.>"], "publish": ["bank-a.payments"],
 *                        "subscribe": ["bank-b.*"], "consume": ["bank-b.payments"] }
 *
 * Each action lists patterns over dot-separated names: a segment `*` matches any one
 * segment, a last segment `>` matches one or more. A missing claim grants nothing; a
 * malformed one (not an object, an unknown action, a bad or oversized list) grants
 * nothing either, and says so in the refusal. Checked on every request.
 */
import { ProtocolError } from '../../protocol/errors.js';
import { MAX_TOPIC_NAME_LENGTH } from '../../protocol/limits.js';

export const TOPICS_CLAIM = 'hermetic_topics';
export const TOPIC_ACTIONS = ['create', 'publish', 'subscribe', 'consume'] as const;
export type TopicAction = (typeof TOPIC_ACTIONS)[number];
/** Patterns per action in one claim: bounds the work of each check. */
export const MAX_TOPIC_PATTERNS_PER_ACTION = 32;

const SEGMENT = /^[a-z0-9_-]+$/;
const NAME_START = /^[a-z0-9*>]/;

export type TopicGrants =
  | { readonly kind: 'none' }
  | { readonly kind: 'malformed'; readonly reason: string }
  | { readonly kind: 'granted'; readonly patterns: Readonly<Record<TopicAction, readonly (readonly string[])[]>> };

export const NO_TOPIC_GRANTS: TopicGrants = { kind: 'none' };

function isAction(k: string): k is TopicAction {
  return (TOPIC_ACTIONS as readonly string[]).includes(k);
}

/** A pattern's segments, or a reason it is not one. */
function parsePattern(p: unknown): string[] | string {
  if (typeof p !== 'string' || p.length === 0 || p.length > MAX_TOPIC_NAME_LENGTH || !NAME_START.test(p)) return 'a pattern is not a string of 1..128 characters';
  const segments = p.split('.');
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i]!;
    if (s === '*') continue;
    if (s === '>') {
      if (i !== segments.length - 1) return `pattern ${JSON.stringify(p)}: '>' only as the last segment`;
      continue;
    }
    if (!SEGMENT.test(s)) return `pattern ${JSON.stringify(p)}: segments of a-z 0-9 _ -, or * or >`;
  }
  return segments;
}

/** Reads the claim's value from a verified token's payload (undefined when absent). */
export function parseTopicGrants(claim: unknown): TopicGrants {
  if (claim === undefined) return NO_TOPIC_GRANTS;
  if (typeof claim !== 'object' || claim === null || Array.isArray(claim)) return { kind: 'malformed', reason: `${TOPICS_CLAIM} is not an object` };
  const patterns: Record<TopicAction, string[][]> = { create: [], publish: [], subscribe: [], consume: [] };
  for (const [action, list] of Object.entries(claim as Record<string, unknown>)) {
    if (!isAction(action)) return { kind: 'malformed', reason: `${TOPICS_CLAIM}: unknown action ${JSON.stringify(action.slice(0, 32))}` };
    if (!Array.isArray(list) || list.length > MAX_TOPIC_PATTERNS_PER_ACTION) {
      return { kind: 'malformed', reason: `${TOPICS_CLAIM}.${action}: a list of at most ${MAX_TOPIC_PATTERNS_PER_ACTION} patterns` };
    }
    for (const p of list) {
      const parsed = parsePattern(p);
      if (typeof parsed === 'string') return { kind: 'malformed', reason: `${TOPICS_CLAIM}.${action}: ${parsed}` };
      patterns[action].push(parsed);
    }
  }
  return { kind: 'granted', patterns };
}

export function patternMatches(pattern: readonly string[], name: string): boolean {
  const segments = name.split('.');
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i]!;
    if (p === '>') return segments.length > i;
    if (i >= segments.length) return false;
    if (p !== '*' && p !== segments[i]) return false;
  }
  return segments.length === pattern.length;
}

/** Throws FORBIDDEN (with `details.action`, `details.topic`, `details.reason`) unless
 * the grants allow `action` on topic `name`. */
export function checkTopicAccess(grants: TopicGrants, action: TopicAction, name: string): void {
  if (grants.kind === 'granted' && grants.patterns[action].some((p) => patternMatches(p, name))) return;
  const reason = grants.kind === 'none' ? 'no_claim' : grants.kind === 'malformed' ? 'malformed_claim' : 'not_granted';
  const why = grants.kind === 'malformed' ? grants.reason : grants.kind === 'none' ? `the token has no ${TOPICS_CLAIM} claim` : `the token's ${TOPICS_CLAIM} claim does not grant it`;
  throw new ProtocolError('FORBIDDEN', `${action} on topic ${name}: ${why}`, { action, topic: name, reason });
}
