/**
 * Topics over HTTP (docs/PROTOCOL.md, "Topics"): create one, describe it, reset it to a
 * new epoch, and read a page of its messages. Every request is checked against the
 * token's topic claim (server/topics/acl.ts); a refusal is FORBIDDEN and is counted.
 */
import type { TemplatedApp } from 'uWebSockets.js';
import { parseJsonObject } from '../../protocol/decode.js';
import { ProtocolError } from '../../protocol/errors.js';
import { MAX_TOPIC_NAME_LENGTH, MAX_TOPIC_READ_MESSAGES } from '../../protocol/limits.js';
import { decodeCreateGroupRequest, decodeCreateTopicRequest, encodeTopicInfo, encodeTopicPage, groupName, topicName } from '../../protocol/topics.js';
import type { RelayMetrics } from '../metrics.js';
import { type TopicAction, type TopicGrants, checkTopicAccess } from '../topics/acl.js';
import type { GroupStore } from '../topics/groups.js';
import { type TopicInfo, type TopicStore, wireMessage } from '../topics/store.js';
import { decodePathParam } from './context.js';
import { intParam } from './log-routes.js';
import type { Router } from './router.js';

export interface TopicRouteDeps {
  readonly topics: TopicStore;
  readonly groups: GroupStore;
  readonly metrics: RelayMetrics;
  /** Told when a topic was reset (its subscribers are ended). */
  readonly onReset: (topic: string, epoch: number) => void;
  /** Told when a group was deleted (its members, woken, find it gone). */
  readonly onGroupDeleted: (topic: string, epoch: number, head: number) => void;
}

/** Offsets and epochs in a query: positive safe integers. */
const MAX_POSITION = Number.MAX_SAFE_INTEGER;

export function registerTopicRoutes(app: TemplatedApp, router: Router, deps: TopicRouteDeps): void {
  const { route, authCaller } = router;

  /** Throws FORBIDDEN, counted, unless one of `actions` is granted on `name`. */
  const guard = (grants: TopicGrants, actions: readonly TopicAction[], name: string): void => {
    let refusal: unknown;
    for (const action of actions) {
      try {
        checkTopicAccess(grants, action, name);
        return;
      } catch (err) {
        refusal ??= err;
      }
    }
    const details = (refusal as ProtocolError).details ?? {};
    deps.metrics.topicDenied.inc({ action: String(details.action), reason: String(details.reason) });
    throw refusal;
  };

  const nameParam = (raw: string): string => {
    const name = decodePathParam(raw, 'topic');
    if (name.length > MAX_TOPIC_NAME_LENGTH) throw new ProtocolError('BAD_REQUEST', 'topic: too long');
    return topicName(name, 'topic');
  };

  const found = async (name: string): Promise<TopicInfo> => {
    const t = await deps.topics.info(name);
    if (!t) throw new ProtocolError('TOPIC_NOT_FOUND', `no topic ${name}`);
    return t;
  };

  app.post(
    '/v1/topics',
    route('create_topic', 0, async (ex) => {
      const [caller, text] = await Promise.all([authCaller(ex), ex.readJsonText()]);
      const req = decodeCreateTopicRequest(parseJsonObject(text));
      guard(caller.topics, ['create'], req.name);
      const t = await deps.topics.create(req.name, caller.userId, { retentionMs: req.retentionMs, retentionBytes: req.retentionBytes });
      ex.json(201, encodeTopicInfo(t));
    }),
  );

  app.get(
    '/v1/topics/:topic',
    route('topic_info', 1, async (ex) => {
      const caller = await authCaller(ex);
      const name = nameParam(ex.info.params[0] ?? '');
      // Checked before the lookup: whether a topic exists is not told to who may not use it.
      guard(caller.topics, ['create', 'publish', 'subscribe', 'consume'], name);
      ex.json(200, encodeTopicInfo(await found(name)));
    }),
  );

  app.post(
    '/v1/topics/:topic/reset',
    route('reset_topic', 1, async (ex) => {
      const caller = await authCaller(ex);
      ex.refuseBody();
      const name = nameParam(ex.info.params[0] ?? '');
      guard(caller.topics, ['create'], name);
      const t = await deps.topics.reset(name);
      deps.onReset(name, t.epoch);
      ex.json(200, encodeTopicInfo(t));
    }),
  );

  app.get(
    '/v1/topics/:topic/messages',
    route('read_topic', 1, async (ex) => {
      const caller = await authCaller(ex);
      const name = nameParam(ex.info.params[0] ?? '');
      guard(caller.topics, ['subscribe'], name);
      const query = new URLSearchParams(ex.info.query);
      const epoch = intParam(query, 'epoch', 1, MAX_POSITION);
      const from = intParam(query, 'from', 1, MAX_POSITION);
      const limit = intParam(query, 'limit', 1, MAX_TOPIC_READ_MESSAGES, MAX_TOPIC_READ_MESSAGES);
      const page = await deps.topics.read(name, epoch, from, { maxMessages: limit });
      ex.json(200, encodeTopicPage({ epoch: page.epoch, next: page.next, head: page.head, messages: page.messages.map(wireMessage) }));
    }),
  );

  app.post(
    '/v1/topics/:topic/groups',
    route('create_group', 1, async (ex) => {
      const [caller, text] = await Promise.all([authCaller(ex), ex.readJsonText()]);
      const topic = nameParam(ex.info.params[0] ?? '');
      const req = decodeCreateGroupRequest(parseJsonObject(text));
      guard(caller.topics, ['consume'], topic);
      // The relay publishes into the dead-letter topic for the group: its creator must be
      // allowed to.
      guard(caller.topics, ['publish'], req.deadLetterTopic);
      const g = await deps.groups.create(topic, req.name, caller.userId, req);
      ex.json(201, g);
    }),
  );

  app.get(
    '/v1/topics/:topic/groups/:group',
    route('group_info', 2, async (ex) => {
      const caller = await authCaller(ex);
      const topic = nameParam(ex.info.params[0] ?? '');
      const name = groupName(decodePathParam(ex.info.params[1] ?? '', 'group'));
      guard(caller.topics, ['consume'], topic);
      const g = await deps.groups.info(topic, name);
      if (!g) throw new ProtocolError('GROUP_NOT_FOUND', `no group ${name} of topic ${topic}`);
      ex.json(200, g);
    }),
  );

  app.del(
    '/v1/topics/:topic/groups/:group',
    route('delete_group', 2, async (ex) => {
      const caller = await authCaller(ex);
      ex.refuseBody();
      const topic = nameParam(ex.info.params[0] ?? '');
      const name = groupName(decodePathParam(ex.info.params[1] ?? '', 'group'));
      guard(caller.topics, ['consume'], topic);
      const gone = await deps.groups.delete(topic, name);
      if (!gone) throw new ProtocolError('GROUP_NOT_FOUND', `no group ${name} of topic ${topic}`);
      deps.onGroupDeleted(topic, gone.epoch, gone.head);
      ex.json(200, { topic, name, deleted: true });
    }),
  );
}
