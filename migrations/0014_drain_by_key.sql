-- Retirement's drain reads a partition by key, not whole.
--
-- The drain of migrations/0011 read every row of the partition four times (its
-- mailboxes, their cursors, the expired entries, the entries to carry), holding the
-- cursor rows of its mailboxes meanwhile. At full load a partition holds over a million
-- envelopes (more than a GiB of ciphertext): the drain took longer than the relay's
-- 10 s answer limit, the relay gave the transaction up (it rolled back), every later
-- pass tried the same drain first and failed, so no drain and no drop ever happened
-- again and the log grew without bound; and the ACKs queued behind the cursor rows for
-- those seconds failed too.
--
-- Now the drain walks the partition's mailbox index (user_id, device_id, seq): one
-- descent per mailbox to find the partition's mailboxes, then, per mailbox, the range
-- above its cursor (the entries not acknowledged). Its cost follows the partition's
-- mailboxes and what they have not acknowledged, not its rows: with recipients online
-- almost everything is below the cursors, and nothing of it is read.
--
-- And it carries in steps of bounded size, each its own transaction: a call moves at
-- most p_max_rows entries and p_max_bytes of payload (at least one entry), and says
-- whether it is done. Devices offline with full mailboxes make a partition's backlog
-- large (each device may hold HERMETIC_MAILBOX_MAX_ENVELOPES envelopes): moved in one
-- transaction it would outrun the answer limit again, and hold the cursor rows (the
-- ACKs of every mailbox in the partition) for as long. Between steps, readers see each
-- entry once, in one partition or the other; an ACK between steps credits what it
-- passes, as in any partition not drained; a batch still writing into the partition
-- (a relay whose clock is behind) is carried by the next step.
--
-- The last step (nothing left to carry) credits the quota of the expired
-- unacknowledged entries (they go with the partition) and marks it drained. The cursor
-- rows of the mailboxes with anything unacknowledged here are locked first at each
-- step, in key order ("C"), as the ACK does. A carried
-- entry keeps its mailbox, sequence, ids and times; its send_* columns are cleared (it
-- no longer answers resends).
-- The two-argument form goes: a relay of an earlier version still sharing the database
-- finds it gone, and its retirement passes fail (logged, nothing lost) while the
-- upgraded relays retire.
DROP FUNCTION hermetic_drain_partition(text, bigint);
CREATE FUNCTION hermetic_drain_partition(p_name text, p_now bigint, p_max_rows int, p_max_bytes bigint,
                                         OUT r_carried bigint, OUT r_expired bigint, OUT r_done boolean)
LANGUAGE plpgsql
SET jit = off
AS $fn$
DECLARE
  v_from bigint;
  v_to bigint;
  v_slot bigint;
  v_users text[];
  v_devices text[];
  v_candidates bigint;
BEGIN
  r_carried := 0;
  r_expired := 0;
  r_done := true;
  IF p_max_rows < 1 OR p_max_bytes < 1 THEN
    RAISE EXCEPTION 'a drain step must be allowed at least one entry';
  END IF;
  PERFORM pg_advisory_xact_lock(hermetic_partition_lock_key());
  PERFORM hermetic_lock_partition(p_name, true);
  SELECT from_ms, to_ms INTO v_from, v_to FROM envelope_partitions WHERE name = p_name AND NOT drained;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  IF p_now >= v_from AND p_now < v_to THEN
    RAISE EXCEPTION 'partition % is the current one', p_name;
  END IF;
  SELECT from_ms INTO v_slot FROM envelope_partitions WHERE from_ms <= p_now AND to_ms > p_now AND NOT drained;
  IF v_slot IS NULL THEN
    RAISE EXCEPTION 'no envelope partition covers %', p_now USING ERRCODE = '23514';
  END IF;
  -- The partition's mailboxes that hold an entry above their cursor (or have no cursor
  -- row: nothing acknowledged): each step of the walk finds the next mailbox in the
  -- index, past the previous (a skip scan), and one probe above its cursor tells. Read
  -- without locks: a mailbox with nothing above its cursor stays so (a cursor only moves
  -- forward, and no batch writes into this partition while its lock is held here), so
  -- only the others are locked, in key order "C"; with recipients online those are few,
  -- and the step writes nothing for the rest.
  EXECUTE format($q$
    WITH RECURSIVE boxes(u, d) AS (
      (SELECT e.user_id, e.device_id FROM %1$I e ORDER BY e.user_id, e.device_id LIMIT 1)
      UNION ALL
      SELECT n.user_id, n.device_id FROM boxes b
       CROSS JOIN LATERAL (SELECT e.user_id, e.device_id FROM %1$I e
                            WHERE (e.user_id, e.device_id) > (b.u, b.d)
                            ORDER BY e.user_id, e.device_id LIMIT 1) n
    )
    SELECT array_agg(b.u ORDER BY b.u COLLATE "C", b.d COLLATE "C"), array_agg(b.d ORDER BY b.u COLLATE "C", b.d COLLATE "C")
      FROM boxes b LEFT JOIN mailbox_cursors c ON c.user_id = b.u AND c.device_id = b.d
     WHERE EXISTS (SELECT 1 FROM %1$I e WHERE e.user_id = b.u AND e.device_id = b.d AND e.seq > coalesce(c.acked_seq, 0))$q$, p_name)
    INTO v_users, v_devices;
  IF v_users IS NOT NULL THEN
    INSERT INTO mailbox_cursors (user_id, device_id)
    SELECT x.u, x.d FROM unnest(v_users, v_devices) WITH ORDINALITY AS x(u, d, i) ORDER BY x.i
        ON CONFLICT DO NOTHING;
    PERFORM 1 FROM mailbox_cursors c JOIN unnest(v_users, v_devices) AS x(u, d) ON c.user_id = x.u AND c.device_id = x.d
      ORDER BY c.user_id COLLATE "C", c.device_id COLLATE "C" FOR UPDATE OF c;
    -- This step's entries: up to p_max_rows of those above their cursor and not
    -- expired (by the index, stopping there), cut to p_max_bytes of payload (the first
    -- always kept). Done when fewer than p_max_rows were found and none was cut.
    EXECUTE format($q$
      WITH candidates AS MATERIALIZED (
        SELECT e.user_id, e.device_id, e.seq, e.size
          FROM unnest($1::text[], $2::text[]) AS x(u, d)
          JOIN mailbox_cursors c ON c.user_id = x.u AND c.device_id = x.d
         CROSS JOIN LATERAL (SELECT e.user_id, e.device_id, e.seq, e.size FROM %1$I e
                              WHERE e.user_id = c.user_id AND e.device_id = c.device_id
                                AND e.seq > c.acked_seq AND e.expires_at_ms > $3) e
         LIMIT $5
      ), step AS MATERIALIZED (
        SELECT k.user_id, k.device_id, k.seq FROM (
          SELECT k.*, row_number() OVER w AS i, sum(k.size) OVER w AS upto
            FROM candidates k WINDOW w AS (ORDER BY k.user_id, k.device_id, k.seq ROWS UNBOUNDED PRECEDING)) k
         WHERE k.i = 1 OR k.upto <= $6
      ), moved AS (
        DELETE FROM %1$I e USING step s
         WHERE e.user_id = s.user_id AND e.device_id = s.device_id AND e.seq = s.seq
        RETURNING e.user_id, e.device_id, e.seq, e.envelope_id, e.sender_user, e.sender_device,
                  e.stored_at_ms, e.expires_at_ms, e.size, e.payload
      ), placed AS (
        INSERT INTO envelopes (slot_ms, user_id, device_id, seq, envelope_id, sender_user, sender_device,
                               stored_at_ms, expires_at_ms, size, payload)
        SELECT $4, m.user_id, m.device_id, m.seq, m.envelope_id, m.sender_user, m.sender_device,
               m.stored_at_ms, m.expires_at_ms, m.size, m.payload FROM moved m
        RETURNING 1
      )
      SELECT (SELECT count(*) FROM placed), (SELECT count(*) FROM candidates)$q$, p_name)
      INTO r_carried, v_candidates USING v_users, v_devices, p_now, v_slot, p_max_rows, p_max_bytes;
    IF v_candidates >= p_max_rows OR r_carried < v_candidates THEN
      r_done := false;
      RETURN;
    END IF;
    -- Nothing left to carry: what is above a cursor now is expired.
    EXECUTE format($q$
      WITH gone AS (
        SELECT e.user_id, e.device_id, sum(e.size)::bigint AS b, count(*) AS n
          FROM unnest($1::text[], $2::text[]) AS x(u, d)
          JOIN mailbox_cursors c ON c.user_id = x.u AND c.device_id = x.d
         CROSS JOIN LATERAL (SELECT e.user_id, e.device_id, e.size FROM %1$I e
                              WHERE e.user_id = c.user_id AND e.device_id = c.device_id
                                AND e.seq > c.acked_seq AND e.expires_at_ms <= $3) e
         GROUP BY e.user_id, e.device_id
      ), credited AS (
        UPDATE mailbox_cursors c SET out_bytes = c.out_bytes + g.b, out_count = c.out_count + g.n
          FROM gone g WHERE c.user_id = g.user_id AND c.device_id = g.device_id
        RETURNING g.n
      )
      SELECT coalesce(sum(n), 0)::bigint FROM credited$q$, p_name)
      INTO r_expired USING v_users, v_devices, p_now;
  END IF;
  UPDATE envelope_partitions SET drained = true WHERE name = p_name;
END
$fn$;
