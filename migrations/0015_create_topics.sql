-- Topics: durable pub/sub logs on the same engine as the mailboxes (docs/PROTOCOL.md,
-- "Topics").
--
-- * A topic is an append-only log of opaque messages, each at the next offset of its
--   epoch (1, 2, 3, ... with no gaps: offsets are given out under the topic row's lock).
-- * Messages live in a partition of `topic_messages` per topic, itself cut into time
--   slices (range partitions on slot_ms, the publish time, kept increasing per topic), so
--   that retention drops whole slices: by age (a slice goes once all of it is older than
--   the topic's retention age) and by size (the oldest slices go while the topic holds
--   more than its retention bytes; the current slice is never dropped). Nothing is
--   deleted row by row.
-- * `earliest_offset` is the first offset still stored. A reader asking for less is told
--   the offset was retired, never silently moved ahead. A reset drops every slice, bumps
--   the epoch and starts offsets again at 1: a reader holding an offset of an earlier
--   epoch is told that instead.
-- * Publishing is idempotent by (publisher user, publish id) while the first message is
--   stored: a repeat gets the first one's offset; the same id with other content is a
--   conflict.

CREATE TABLE topics (
  topic_id          bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name              text    NOT NULL UNIQUE,
  epoch             bigint  NOT NULL DEFAULT 1,
  -- The offset the next message gets, and the first one still stored.
  next_offset       bigint  NOT NULL DEFAULT 1,
  earliest_offset   bigint  NOT NULL DEFAULT 1,
  -- NULL: no limit of that kind.
  retention_ms      bigint  CHECK (retention_ms > 0),
  retention_bytes   bigint  CHECK (retention_bytes > 0),
  slice_ms          bigint  NOT NULL CHECK (slice_ms > 0),
  -- The latest publish time given: the next is never earlier, whatever the relay's clock.
  last_published_ms bigint  NOT NULL DEFAULT 0,
  created_by        text    NOT NULL,
  created_at_ms     bigint  NOT NULL
);
-- Topics per creator are bounded (hermetic_create_topic).
CREATE INDEX topics_created_by ON topics (created_by);

-- The slices of each topic, [from_ms, to_ms) aligned to the topic's slice width. The
-- offsets and bytes they hold are kept by the publishes that write them (one row update
-- per batch), so that retention needs no scan.
CREATE TABLE topic_slices (
  topic_id     bigint NOT NULL REFERENCES topics (topic_id) ON DELETE CASCADE,
  from_ms      bigint NOT NULL,
  to_ms        bigint NOT NULL CHECK (to_ms > from_ms),
  first_offset bigint,
  last_offset  bigint,
  bytes        bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (topic_id, from_ms)
);

CREATE TABLE topic_messages (
  topic_id         bigint NOT NULL,
  -- The publish time: the slice key.
  slot_ms          bigint NOT NULL,
  off              bigint NOT NULL,
  publisher_user   text   NOT NULL,
  publisher_device text   NOT NULL,
  publish_id       bytea  NOT NULL,
  content_hash     bytea  NOT NULL,
  -- The ordering key of consumer groups (messages with one key go to one member at a
  -- time); NULL when the publisher gave none.
  msg_key          bytea,
  size             int    NOT NULL,
  payload          bytea  NOT NULL
) PARTITION BY LIST (topic_id);
CREATE INDEX topic_messages_offset ON topic_messages (topic_id, off);
CREATE INDEX topic_messages_publish ON topic_messages (topic_id, publish_id);

-- The names of a topic's partition and of its slices (topic ids are numbers, so the
-- names are always valid identifiers).
CREATE FUNCTION hermetic_topic_table(p_topic_id bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT 'topic_' || p_topic_id $$;
CREATE FUNCTION hermetic_topic_slice_table(p_topic_id bigint, p_from_ms bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT 'topic_' || p_topic_id || '_' || p_from_ms $$;

-- Creates a topic and its partition. Raises 23505 (unique violation) when the name is
-- taken, HM001 when its creator has p_max_per_creator topics already. The partition is
-- made apart and then attached, which locks the parent table only against other schema
-- changes (creating it as a partition would lock every topic's reads and writes); the
-- attach waits at most p_lock_timeout_ms (55P03 beyond it).
CREATE FUNCTION hermetic_create_topic(p_name text, p_created_by text, p_retention_ms bigint, p_retention_bytes bigint, p_slice_ms bigint, p_now bigint,
                                      p_max_per_creator int, p_lock_timeout_ms int)
RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
  v_id bigint;
BEGIN
  IF (SELECT count(*) FROM topics WHERE created_by = p_created_by) >= p_max_per_creator THEN
    RAISE EXCEPTION 'too many topics created by this user' USING ERRCODE = 'HM001';
  END IF;
  INSERT INTO topics (name, retention_ms, retention_bytes, slice_ms, created_by, created_at_ms)
  VALUES (p_name, p_retention_ms, p_retention_bytes, p_slice_ms, p_created_by, p_now)
  RETURNING topic_id INTO v_id;
  PERFORM set_config('lock_timeout', p_lock_timeout_ms::text, true);
  EXECUTE format('CREATE TABLE %I (LIKE topic_messages INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (slot_ms)', hermetic_topic_table(v_id));
  EXECUTE format('ALTER TABLE topic_messages ATTACH PARTITION %I FOR VALUES IN (%s)', hermetic_topic_table(v_id), v_id);
  RETURN v_id;
END
$fn$;

-- Makes sure the slice covering p_slot_ms exists (the caller holds the topic row's lock,
-- so two publishers never create it together). Made apart and attached, as above: the
-- topic's readers and writers go on meanwhile.
CREATE FUNCTION hermetic_ensure_topic_slice(p_topic_id bigint, p_slot_ms bigint, p_slice_ms bigint) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
  v_from bigint := p_slot_ms - p_slot_ms % p_slice_ms;
BEGIN
  IF EXISTS (SELECT 1 FROM topic_slices WHERE topic_id = p_topic_id AND from_ms = v_from) THEN
    RETURN;
  END IF;
  EXECUTE format('CREATE TABLE %I (LIKE topic_messages INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', hermetic_topic_slice_table(p_topic_id, v_from));
  EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
                 hermetic_topic_table(p_topic_id), hermetic_topic_slice_table(p_topic_id, v_from), v_from, v_from + p_slice_ms);
  INSERT INTO topic_slices (topic_id, from_ms, to_ms) VALUES (p_topic_id, v_from, v_from + p_slice_ms);
END
$fn$;

-- Drops one slice of a topic (the caller holds the topic row's lock) and moves the
-- topic's earliest offset past it. Waits at most p_lock_timeout_ms for the table lock
-- (SQLSTATE 55P03 beyond it: tried again at the next pass).
CREATE FUNCTION hermetic_drop_topic_slice(p_topic_id bigint, p_from_ms bigint, p_lock_timeout_ms int) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
  PERFORM set_config('lock_timeout', p_lock_timeout_ms::text, true);
  EXECUTE format('DROP TABLE IF EXISTS %I', hermetic_topic_slice_table(p_topic_id, p_from_ms));
  DELETE FROM topic_slices WHERE topic_id = p_topic_id AND from_ms = p_from_ms;
  UPDATE topics t SET earliest_offset = coalesce(
           (SELECT min(s.first_offset) FROM topic_slices s WHERE s.topic_id = p_topic_id AND s.first_offset IS NOT NULL),
           t.next_offset)
   WHERE t.topic_id = p_topic_id;
END
$fn$;
