-- Applies cumulative ACKs (one per mailbox, highest sequence) in one statement: the
-- cursors move and the envelopes they cover are removed together.
--
-- Committed without waiting for the WAL flush (synchronous_commit = off for this
-- transaction only). What a database crash can lose is the last fraction of a second of
-- ACKs: those envelopes are then delivered again, which at-least-once delivery allows
-- and the SDK deduplicates by envelope id. It can never lose an envelope; SENDs keep
-- synchronous commits, and a later synchronous commit flushes the WAL of every commit
-- before it.
CREATE FUNCTION hermetic_apply_acks(p_user text[], p_device text[], p_seq bigint[]) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  INSERT INTO mailbox_cursors (user_id, device_id, acked_seq)
  SELECT * FROM unnest(p_user, p_device, p_seq)
  ON CONFLICT (user_id, device_id) DO UPDATE
    SET acked_seq = GREATEST(mailbox_cursors.acked_seq, EXCLUDED.acked_seq);
  -- Planned for these values each time (EXECUTE): a plan cached while the table was
  -- small could scan it whole once it is not.
  EXECUTE 'DELETE FROM envelopes e
            USING unnest($1, $2, $3) AS a(u, d, s)
            WHERE e.user_id = a.u AND e.device_id = a.d AND e.seq <= a.s'
    USING p_user, p_device, p_seq;
END
$fn$;
