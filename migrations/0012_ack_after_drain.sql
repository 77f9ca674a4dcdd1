-- An ACK credits only envelopes that retirement has not credited already.
--
-- Retirement credits a drained partition's expired, unacknowledged envelopes
-- (hermetic_drain_partition) and leaves them on disk until the partition is dropped,
-- which may be several ticks later (the drop waits for its table lock). An ACK passing
-- them in between counted them again (0011): the mailbox's counters went below zero and
-- its quota grew by that much. Now the ACK counts no row of a drained partition: those
-- rows are either acknowledged (below the cursor, outside the ACK's range), carried
-- forward (moved out of the partition) or credited by the drain.
--
-- The cursor rows are locked in a statement of their own before anything is counted, so
-- that the counting statement's snapshot is taken after any drain holding them has
-- committed (a single statement waiting for a row lock keeps its older snapshot, and
-- would not see that drain's credit nor its partition marked drained).
CREATE OR REPLACE FUNCTION hermetic_apply_acks(p_user text[], p_device text[], p_seq bigint[]) RETURNS void
LANGUAGE plpgsql
-- Every access here is by key (see 0011).
SET enable_seqscan = off
SET jit = off
AS $fn$
DECLARE
  v_from bigint[];
  v_to bigint[];
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  INSERT INTO mailbox_cursors (user_id, device_id)
  SELECT a.u, a.d FROM unnest(p_user, p_device) AS a(u, d)
   ORDER BY a.u COLLATE "C", a.d COLLATE "C"
  ON CONFLICT DO NOTHING;
  -- Key order, like hermetic_drain_partition: no cycle with a drain or another ACK.
  PERFORM 1 FROM mailbox_cursors c JOIN unnest(p_user, p_device, p_seq) AS a(u, d, s) ON c.user_id = a.u AND c.device_id = a.d
    WHERE a.s > c.acked_seq
    ORDER BY c.user_id COLLATE "C", c.device_id COLLATE "C"
      FOR UPDATE OF c;
  SELECT coalesce(array_agg(p.from_ms), '{}'), coalesce(array_agg(p.to_ms), '{}') INTO v_from, v_to
    FROM envelope_partitions p WHERE p.drained;
  WITH cur AS (
    SELECT c.user_id, c.device_id, c.acked_seq AS old_seq, a.s AS new_seq
      FROM mailbox_cursors c JOIN unnest(p_user, p_device, p_seq) AS a(u, d, s) ON c.user_id = a.u AND c.device_id = a.d
     WHERE a.s > c.acked_seq
  ), freed AS (
    SELECT cur.user_id, cur.device_id, cur.new_seq, coalesce(x.b, 0)::bigint AS b, x.n
      FROM cur, LATERAL (SELECT sum(e.size) AS b, count(*) AS n FROM envelopes e
                          WHERE e.user_id = cur.user_id AND e.device_id = cur.device_id
                            AND e.seq > cur.old_seq AND e.seq <= cur.new_seq
                            AND NOT EXISTS (SELECT 1 FROM unnest(v_from, v_to) AS d(f, t) WHERE e.slot_ms >= d.f AND e.slot_ms < d.t)) x
  )
  UPDATE mailbox_cursors c
     SET acked_seq = greatest(c.acked_seq, f.new_seq), out_bytes = c.out_bytes + f.b, out_count = c.out_count + f.n
    FROM freed f
   WHERE c.user_id = f.user_id AND c.device_id = f.device_id;
END
$fn$;
