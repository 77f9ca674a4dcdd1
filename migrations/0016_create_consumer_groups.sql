-- Consumer groups on topics (docs/PROTOCOL.md, "Consumer groups"): the members of a
-- group share a topic's messages, each leased to one member at a time and acknowledged
-- one by one.
--
-- * A group reads the topic once, in offset order: `next_offset` is the first offset it
--   never leased. New offsets are leased a range at a time: one group_leases row per
--   range given to a member (its acknowledgements a bitmap in the row), so the usual path
--   costs a row write per batch, not per message.
-- * What goes wrong is kept per message, in group_redeliveries: offsets negatively
--   acknowledged, or left unacknowledged when their lease expired (its member gone or
--   too slow). They are leased again, one row each, until acknowledged; past the group's
--   maximum number of deliveries they are published to its dead-letter topic (with the
--   reason and the delivery count) and leave the group.
-- * Everything below min(first unacknowledged leased offset, first redelivery,
--   next_offset) is done: the group's committed offset, computed, never stored.
-- * A reset of the topic (a new epoch) starts the group again at offset 1.

CREATE TABLE consumer_groups (
  topic_id             bigint NOT NULL REFERENCES topics (topic_id) ON DELETE CASCADE,
  name                 text   NOT NULL,
  epoch                bigint NOT NULL,
  next_offset          bigint NOT NULL,
  visibility_ms        int    NOT NULL CHECK (visibility_ms > 0),
  max_deliveries       int    NOT NULL CHECK (max_deliveries > 0),
  dead_letter_topic_id bigint NOT NULL REFERENCES topics (topic_id),
  -- Messages with one key go to one member at a time, in offset order.
  ordered_by_key       boolean NOT NULL DEFAULT false,
  -- Offsets retired by the topic's retention before the group leased them.
  skipped              bigint NOT NULL DEFAULT 0,
  dead_lettered        bigint NOT NULL DEFAULT 0,
  created_by           text   NOT NULL,
  created_at_ms        bigint NOT NULL,
  PRIMARY KEY (topic_id, name)
);

CREATE TABLE group_leases (
  topic_id    bigint NOT NULL,
  group_name  text   NOT NULL,
  first_off   bigint NOT NULL,
  last_off    bigint NOT NULL CHECK (last_off >= first_off),
  member      text   NOT NULL,
  deadline_ms bigint NOT NULL,
  -- Bit i: offset first_off + i is acknowledged (or handed to group_redeliveries).
  done        bytea  NOT NULL,
  done_count  int    NOT NULL DEFAULT 0,
  PRIMARY KEY (topic_id, group_name, first_off),
  FOREIGN KEY (topic_id, group_name) REFERENCES consumer_groups (topic_id, name) ON DELETE CASCADE
);
CREATE INDEX group_leases_member ON group_leases (topic_id, group_name, member);

CREATE TABLE group_redeliveries (
  topic_id        bigint NOT NULL,
  group_name      text   NOT NULL,
  off             bigint NOT NULL,
  -- Deliveries so far (the next lease makes one more).
  deliveries      int    NOT NULL,
  available_at_ms bigint NOT NULL,
  -- While leased again: to whom, until when.
  member          text,
  deadline_ms     bigint,
  -- Why it is here: 'nack', 'visibility_timeout', or 'blocked' (an ordered group's new
  -- message whose key had an earlier message leased: not delivered yet).
  reason          text   NOT NULL,
  -- The member whose delivery failed: the next goes to another member when one asks.
  last_member     text,
  PRIMARY KEY (topic_id, group_name, off),
  FOREIGN KEY (topic_id, group_name) REFERENCES consumer_groups (topic_id, name) ON DELETE CASCADE
);

-- Due redeliveries are found by time.
CREATE INDEX group_redeliveries_due ON group_redeliveries (topic_id, group_name, available_at_ms);

-- A dead-lettered message keeps where it came from: the source topic, epoch and offset,
-- the group, the delivery count and the reason (JSON text). NULL for other messages.
ALTER TABLE topic_messages ADD COLUMN dead_letter text;
