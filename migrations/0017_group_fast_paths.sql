-- Consumer groups: the usual lease and the usual acknowledgement as one call each.
--
-- A lease or an acknowledgement done statement by statement from the relay is a
-- transaction of five round trips (BEGIN, the group row, the messages or the lease rows,
-- the writes, COMMIT); most of their cost was the round trips, not the work. These two
-- functions do the common case in one call, in the implicit transaction of that call, and
-- take the same locks as the statement-by-statement path (server/topics/groups.ts).
-- Anything uncommon makes them return without writing (no rows, or false), and the relay
-- then runs the full path, which handles every case and says what went wrong.
--
-- Both commit without waiting for the WAL flush (synchronous_commit off for their own
-- transaction, as mailbox acknowledgements do): a database crash can forget the last
-- fraction of a second of leases and acknowledgements, and those messages are then leased
-- again. Delivery is at least once either way; no message is lost. Any later commit that
-- waits for the flush (a publish) makes them durable too.
--
-- Bitmaps: bit i of a lease's `done` is offset first_off + i, most significant bit of
-- each byte first (as groups.ts writes them); PostgreSQL's get_bit/set_bit number the
-- bits of a byte from the least significant, hence (i / 8) * 8 + 7 - i % 8.

-- New offsets for members of an unordered group with nothing waiting to come again and no
-- lease past its deadline: for each member `p_members[i]` in turn, one range lease over
-- the next `p_max[i]` (or fewer) offsets, while there are any. Returns the leased messages
-- with their member, or no rows when the full path must decide.
CREATE FUNCTION hermetic_group_lease_fresh(p_topic text, p_group text, p_members text[], p_max int[], p_now bigint)
RETURNS TABLE (member text, epoch bigint, deadline_ms bigint, off bigint, slot_ms bigint, publisher_user text, publisher_device text, publish_id bytea, msg_key bytea, payload bytea, dead_letter text)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
  g record;
  v_start bigint;
  v_total bigint;
  v_next bigint;
  v_n bigint;
  v_until bigint;
  v_found bigint;
  v_who text[] := '{}';
  v_first bigint[] := '{}';
  v_last bigint[] := '{}';
BEGIN
  IF p_members IS NULL OR p_max IS NULL OR cardinality(p_members) = 0 OR cardinality(p_members) <> cardinality(p_max) THEN
    RETURN;
  END IF;
  SELECT x.topic_id, x.epoch, x.next_offset, x.visibility_ms, x.ordered_by_key,
         t.epoch AS t_epoch, t.next_offset AS t_next, t.earliest_offset AS t_earliest
    INTO g
    FROM consumer_groups x JOIN topics t ON t.topic_id = x.topic_id
   WHERE t.name = p_topic AND x.name = p_group
     FOR NO KEY UPDATE OF x;
  IF NOT FOUND OR g.ordered_by_key OR g.epoch <> g.t_epoch OR g.next_offset < g.t_earliest THEN
    RETURN;
  END IF;
  IF EXISTS (SELECT 1 FROM group_redeliveries r WHERE r.topic_id = g.topic_id AND r.group_name = p_group)
     OR EXISTS (SELECT 1 FROM group_leases l WHERE l.topic_id = g.topic_id AND l.group_name = p_group AND l.deadline_ms <= p_now) THEN
    RETURN;
  END IF;
  v_start := g.next_offset;
  v_total := least((SELECT sum(greatest(m, 0)) FROM unnest(p_max) AS m), g.t_next - v_start);
  IF v_total IS NULL OR v_total <= 0 THEN
    RETURN;
  END IF;
  -- Every offset of the range must still be there (retention may have taken some).
  SELECT count(*) INTO v_found FROM topic_messages m WHERE m.topic_id = g.topic_id AND m.off >= v_start AND m.off < v_start + v_total;
  IF v_found <> v_total THEN
    RETURN;
  END IF;
  v_until := p_now + g.visibility_ms;
  PERFORM set_config('synchronous_commit', 'off', true);
  v_next := v_start;
  FOR i IN 1 .. cardinality(p_members) LOOP
    v_n := least(greatest(p_max[i], 0), v_start + v_total - v_next);
    CONTINUE WHEN v_n <= 0;
    INSERT INTO group_leases (topic_id, group_name, first_off, last_off, member, deadline_ms, done, done_count)
    VALUES (g.topic_id, p_group, v_next, v_next + v_n - 1, p_members[i], v_until, decode(repeat('00', ((v_n + 7) / 8)::int), 'hex'), 0);
    v_who := v_who || p_members[i];
    v_first := v_first || v_next;
    v_last := v_last || (v_next + v_n - 1);
    v_next := v_next + v_n;
  END LOOP;
  UPDATE consumer_groups SET next_offset = v_next WHERE topic_id = g.topic_id AND name = p_group;
  RETURN QUERY
    SELECT r.who, g.epoch, v_until, m.off, m.slot_ms, m.publisher_user, m.publisher_device, m.publish_id, m.msg_key, m.payload, m.dead_letter
      FROM topic_messages m JOIN unnest(v_who, v_first, v_last) AS r(who, f, l) ON m.off BETWEEN r.f AND r.l
     WHERE m.topic_id = g.topic_id AND m.off >= v_start AND m.off < v_next
     ORDER BY m.off;
END
$fn$;

-- Acknowledges offsets that are all in range leases of their member and not yet done:
-- `p_members[i]` acknowledges `p_offsets[i]` (the acknowledgements of several members, as
-- the relay gathers them while one call is under way). Returns false, having written
-- nothing, when any is not (or the group is gone, or in another epoch than `p_epoch` or its
-- topic's): the relay then settles each request by the full path, which refuses what it
-- must. The lease rows are locked in first offset order, whoever's they are, as a lease
-- expiring them and the full path lock them: taken member by member, a call could hold
-- one member's later lease while an expiry holds another's earlier one, each waiting for
-- the other's.
CREATE FUNCTION hermetic_group_ack_fast(p_topic text, p_group text, p_members text[], p_offsets bigint[], p_epoch bigint)
RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
  g record;
  l record;
  o bigint;
  v_bit int;
  v_done bytea;
  v_count int;
  v_wanted bigint[];
  v_pairs bigint;
  v_covered bigint := 0;
  v_upd_first bigint[] := '{}';
  v_upd_done bytea[] := '{}';
  v_upd_count int[] := '{}';
  v_del_first bigint[] := '{}';
BEGIN
  IF p_members IS NULL OR p_offsets IS NULL OR cardinality(p_members) = 0 OR cardinality(p_members) <> cardinality(p_offsets) THEN
    RETURN false;
  END IF;
  SELECT x.topic_id, x.epoch, t.epoch AS t_epoch INTO g
    FROM consumer_groups x JOIN topics t ON t.topic_id = x.topic_id
   WHERE t.name = p_topic AND x.name = p_group
     FOR KEY SHARE OF x;
  IF NOT FOUND OR g.epoch <> g.t_epoch OR (p_epoch IS NOT NULL AND p_epoch <> g.epoch) THEN
    RETURN false;
  END IF;
  SELECT count(*) INTO v_pairs FROM (SELECT DISTINCT x.m, x.o FROM unnest(p_members, p_offsets) AS x(m, o)) y;
  FOR l IN
    SELECT first_off, last_off, done, done_count, member FROM group_leases
     WHERE topic_id = g.topic_id AND group_name = p_group AND member = ANY (p_members)
       AND first_off <= (SELECT max(x) FROM unnest(p_offsets) AS x) AND last_off >= (SELECT min(x) FROM unnest(p_offsets) AS x)
     ORDER BY first_off
       FOR UPDATE
  LOOP
    SELECT array_agg(DISTINCT x.o) INTO v_wanted FROM unnest(p_members, p_offsets) AS x(m, o)
     WHERE x.m = l.member AND x.o BETWEEN l.first_off AND l.last_off;
    CONTINUE WHEN v_wanted IS NULL;
    v_done := l.done;
    v_count := l.done_count;
    FOREACH o IN ARRAY v_wanted LOOP
      v_bit := (((o - l.first_off) / 8) * 8 + 7 - (o - l.first_off) % 8)::int;
      IF get_bit(v_done, v_bit) = 1 THEN
        RETURN false; -- done already: not leased to this member any more
      END IF;
      v_done := set_bit(v_done, v_bit, 1);
      v_count := v_count + 1;
      v_covered := v_covered + 1;
    END LOOP;
    IF v_count >= l.last_off - l.first_off + 1 THEN
      v_del_first := v_del_first || l.first_off;
    ELSE
      v_upd_first := v_upd_first || l.first_off;
      v_upd_done := v_upd_done || v_done;
      v_upd_count := v_upd_count || v_count;
    END IF;
  END LOOP;
  IF v_covered <> v_pairs THEN
    RETURN false; -- some are redeliveries, or not leased to their member
  END IF;
  PERFORM set_config('synchronous_commit', 'off', true);
  IF cardinality(v_del_first) > 0 THEN
    DELETE FROM group_leases WHERE topic_id = g.topic_id AND group_name = p_group AND first_off = ANY (v_del_first);
  END IF;
  IF cardinality(v_upd_first) > 0 THEN
    UPDATE group_leases gl SET done = u.d, done_count = u.c
      FROM unnest(v_upd_first, v_upd_done, v_upd_count) AS u(f, d, c)
     WHERE gl.topic_id = g.topic_id AND gl.group_name = p_group AND gl.first_off = u.f;
  END IF;
  RETURN true;
END
$fn$;
