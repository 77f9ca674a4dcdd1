-- A mailbox is an append-only log with a consumer cursor.
--
-- * An ACK moves the mailbox's cursor (mailbox_cursors.acked_seq) and deletes nothing.
--   Delivery reads after the cursor.
-- * Envelopes live in time-bucketed partitions of `envelopes` (declarative range
--   partitioning on slot_ms: the time the row entered its partition). The relay creates
--   partitions ahead of time (hermetic_ensure_partitions) and retires each one older than
--   its retirement age: the entries still unacknowledged and unexpired are carried
--   forward into the current partition (keeping mailbox, sequence and every delivered
--   field), then the partition is dropped whole (hermetic_drain_partition, then
--   hermetic_drop_partition). The hot path is one append per envelope.
-- * Idempotency lives in the row: the SEND's first target row holds the content hash
--   (send_hash) and, for a SEND to several devices, the answer given (send_devices,
--   send_seqs). A partial unique index per partition keys it. The window is therefore the
--   retirement age: a carried row no longer answers a resend (its send_* columns are
--   cleared when it moves), and a resend after that is stored again; the recipient's
--   SDK deduplicates by envelope id, as at-least-once delivery requires anyway.
-- * The quota counters (migrations/0009) stay: an ACK credits the envelopes between the
--   old and the new cursor still present; retirement credits the expired, unacknowledged
--   envelopes it drops. Both hold the mailbox's cursor row lock, so nothing is credited
--   twice.

ALTER TABLE envelopes RENAME TO envelopes_v1;
ALTER INDEX envelopes_pkey RENAME TO envelopes_v1_pkey;

CREATE TABLE envelopes (
  slot_ms       bigint   NOT NULL,
  user_id       text     NOT NULL,
  device_id     text     NOT NULL,
  seq           bigint   NOT NULL,
  envelope_id   bytea    NOT NULL,
  sender_user   text     NOT NULL,
  sender_device text     NOT NULL,
  stored_at_ms  bigint   NOT NULL,
  expires_at_ms bigint   NOT NULL,
  -- octet_length(payload), so that counting bytes never reads the payload
  size          int      NOT NULL,
  -- On the SEND's first target row while it answers resends; NULL otherwise.
  send_hash     bytea,
  -- The SEND's targets and their sequences, for a SEND to more than one device (a SEND
  -- to one device answers with its own row's device_id and seq).
  send_devices  text[],
  send_seqs     bigint[],
  payload       bytea    NOT NULL
) PARTITION BY RANGE (slot_ms);
-- Sequences are unique per mailbox by construction (mailboxes.next_seq under its row
-- lock); a unique index across partitions would have to include slot_ms anyway.
CREATE INDEX envelopes_mailbox ON envelopes (user_id, device_id, seq);
CREATE UNIQUE INDEX envelopes_send ON envelopes (sender_user, sender_device, envelope_id, slot_ms) WHERE send_hash IS NOT NULL;

-- The partitions, contiguous and non-overlapping, each [from_ms, to_ms). `drained`: its
-- live entries were carried forward and it is waiting to be dropped.
CREATE TABLE envelope_partitions (
  name    text    PRIMARY KEY,
  from_ms bigint  NOT NULL,
  to_ms   bigint  NOT NULL CHECK (to_ms > from_ms),
  drained boolean NOT NULL DEFAULT false
);

-- What was stored before this migration goes into one partition covering all time up to
-- now, retired (its live entries carried forward) at the first retirement. Idempotency
-- records are not carried over: a resend of one of these envelopes is stored again.
DO $do$
DECLARE
  v_now bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
BEGIN
  EXECUTE format('CREATE TABLE %I PARTITION OF envelopes FOR VALUES FROM (%s) TO (%s)', 'envelopes_0', 0, v_now + 1);
  INSERT INTO envelope_partitions (name, from_ms, to_ms) VALUES ('envelopes_0', 0, v_now + 1);
  INSERT INTO envelopes (slot_ms, user_id, device_id, seq, envelope_id, sender_user, sender_device, stored_at_ms, expires_at_ms, size, payload)
  SELECT least(stored_at_ms, v_now), user_id, device_id, seq, envelope_id, sender_user, sender_device, stored_at_ms, expires_at_ms,
         octet_length(payload), payload
    FROM envelopes_v1;
END
$do$;
DROP TABLE envelopes_v1;
DROP FUNCTION hermetic_sweep(bigint, int);
DROP FUNCTION hermetic_remove_envelopes(text[], text[], bigint[]);
DROP TABLE sent_envelopes;

-- Key of the advisory lock that partition maintenance (creating, draining, dropping)
-- takes, so that relays sharing the database take turns.
CREATE FUNCTION hermetic_partition_lock_key() RETURNS bigint LANGUAGE sql IMMUTABLE AS $$ SELECT 7422011011::bigint $$;

-- Creates partitions so that the ones covering [now, now + p_ahead_ms) exist, each
-- p_width_ms wide and aligned to multiples of it (the first after a gap may be shorter
-- or cover the whole gap: after a long stop, one partition covers the time the relays
-- were away rather than one per width). Returns how many it created. Waits at most
-- p_lock_timeout_ms for the table lock that creating a partition takes (SQLSTATE 55P03
-- beyond it; the caller tries again later, partitions being made well ahead).
CREATE FUNCTION hermetic_ensure_partitions(p_now bigint, p_width_ms bigint, p_ahead_ms bigint, p_lock_timeout_ms int) RETURNS int
LANGUAGE plpgsql AS $fn$
DECLARE
  v_end bigint;
  v_to bigint;
  v_made int := 0;
BEGIN
  IF p_width_ms < 1 OR p_ahead_ms < 0 THEN
    RAISE EXCEPTION 'partition width must be positive';
  END IF;
  PERFORM pg_advisory_xact_lock(hermetic_partition_lock_key());
  PERFORM set_config('lock_timeout', p_lock_timeout_ms::text, true);
  -- A clock set back (or a test's) may need a partition before the others: one covering
  -- p_now's width, cut to fit between its neighbours.
  IF NOT EXISTS (SELECT 1 FROM envelope_partitions WHERE from_ms <= p_now AND to_ms > p_now)
     AND EXISTS (SELECT 1 FROM envelope_partitions WHERE from_ms > p_now) THEN
    SELECT greatest(p_now - p_now % p_width_ms, coalesce(max(to_ms), p_now - p_now % p_width_ms)) INTO v_end
      FROM envelope_partitions WHERE to_ms <= p_now;
    SELECT least(v_end - v_end % p_width_ms + p_width_ms, min(from_ms)) INTO v_to
      FROM envelope_partitions WHERE from_ms > p_now;
    EXECUTE format('CREATE TABLE %I PARTITION OF envelopes FOR VALUES FROM (%s) TO (%s)', 'envelopes_' || v_end, v_end, v_to);
    INSERT INTO envelope_partitions (name, from_ms, to_ms) VALUES ('envelopes_' || v_end, v_end, v_to);
    v_made := 1;
  END IF;
  SELECT max(to_ms) INTO v_end FROM envelope_partitions;
  IF v_end IS NULL THEN
    v_end := p_now - p_now % p_width_ms;
  END IF;
  WHILE v_end < p_now + p_ahead_ms LOOP
    IF v_end < p_now - p_now % p_width_ms THEN
      v_to := p_now - p_now % p_width_ms;
    ELSE
      v_to := v_end - v_end % p_width_ms + p_width_ms;
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF envelopes FOR VALUES FROM (%s) TO (%s)', 'envelopes_' || v_end, v_end, v_to);
    INSERT INTO envelope_partitions (name, from_ms, to_ms) VALUES ('envelopes_' || v_end, v_end, v_to);
    v_end := v_to;
    v_made := v_made + 1;
  END LOOP;
  RETURN v_made;
END
$fn$;

-- The lock that keeps a partition from being drained or dropped while a SEND batch
-- writes to it: a batch holds it shared from before it checks that its partition is not
-- drained until it commits; draining and dropping take it exclusively. So a batch that
-- waited long (for its locks, or on a relay whose clock is behind) either finishes
-- before the partition is drained (and the drain sees its envelopes) or finds it
-- drained and is written again into the current one: no envelope is ever written into a
-- partition after its drain. Current partitions are never drained, so batches never wait
-- for it in practice.
CREATE FUNCTION hermetic_lock_partition(p_name text, p_exclusive boolean) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
  IF p_exclusive THEN
    PERFORM pg_advisory_xact_lock(742201, hashtext(p_name));
  ELSE
    PERFORM pg_advisory_xact_lock_shared(742201, hashtext(p_name));
  END IF;
END
$fn$;

-- Retirement, step 1 (one transaction): of partition p_name, carries the entries still
-- unacknowledged and unexpired at p_now into the partition covering p_now (which must
-- exist), credits the quota of the expired unacknowledged ones (they go with the
-- partition), and marks it drained. The cursor rows of its mailboxes are locked first,
-- in key order like the ACK path, so an ACK and a retirement never both credit an
-- envelope and never wait for each other in a cycle. A drained partition holds only
-- acknowledged or expired entries, which no read returns.
CREATE FUNCTION hermetic_drain_partition(p_name text, p_now bigint, OUT r_carried bigint, OUT r_expired bigint)
LANGUAGE plpgsql
SET jit = off
AS $fn$
DECLARE
  v_from bigint;
  v_to bigint;
  v_slot bigint;
BEGIN
  r_carried := 0;
  r_expired := 0;
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
  EXECUTE format('INSERT INTO mailbox_cursors (user_id, device_id)
                  SELECT x.u, x.d FROM (SELECT DISTINCT user_id AS u, device_id AS d FROM %I) x
                   ORDER BY x.u COLLATE "C", x.d COLLATE "C"
                  ON CONFLICT DO NOTHING', p_name);
  EXECUTE format('SELECT count(*) FROM (
                    SELECT 1 FROM mailbox_cursors c
                     WHERE (c.user_id, c.device_id) IN (SELECT user_id, device_id FROM %I)
                     ORDER BY c.user_id COLLATE "C", c.device_id COLLATE "C" FOR UPDATE OF c) x', p_name);
  EXECUTE format('WITH gone AS (
                    SELECT e.user_id, e.device_id, sum(e.size)::bigint AS b, count(*) AS n
                      FROM %I e JOIN mailbox_cursors c ON c.user_id = e.user_id AND c.device_id = e.device_id
                     WHERE e.seq > c.acked_seq AND e.expires_at_ms <= $1
                     GROUP BY e.user_id, e.device_id
                  ), credited AS (
                    UPDATE mailbox_cursors c SET out_bytes = c.out_bytes + g.b, out_count = c.out_count + g.n
                      FROM gone g WHERE c.user_id = g.user_id AND c.device_id = g.device_id
                    RETURNING g.n
                  )
                  SELECT coalesce(sum(n), 0)::bigint FROM credited', p_name)
    INTO r_expired USING p_now;
  -- Through the parent, so that each row moves to the partition its new slot_ms is in.
  WITH moved AS (
    UPDATE envelopes e SET slot_ms = v_slot, send_hash = NULL, send_devices = NULL, send_seqs = NULL
      FROM mailbox_cursors c
     WHERE e.slot_ms >= v_from AND e.slot_ms < v_to
       AND c.user_id = e.user_id AND c.device_id = e.device_id
       AND e.seq > c.acked_seq AND e.expires_at_ms > p_now
    RETURNING 1
  )
  SELECT count(*) INTO r_carried FROM moved;
  UPDATE envelope_partitions SET drained = true WHERE name = p_name;
END
$fn$;

-- Retirement, step 2: drops a drained partition. Dropping takes a lock on the whole
-- table, so this waits at most p_lock_timeout_ms for statements in flight (SQLSTATE
-- 55P03 beyond it: the caller tries again at its next tick). Returns whether it dropped.
CREATE FUNCTION hermetic_drop_partition(p_name text, p_lock_timeout_ms int) RETURNS boolean
LANGUAGE plpgsql AS $fn$
BEGIN
  PERFORM pg_advisory_xact_lock(hermetic_partition_lock_key());
  PERFORM set_config('lock_timeout', p_lock_timeout_ms::text, true);
  PERFORM hermetic_lock_partition(p_name, true);
  IF NOT EXISTS (SELECT 1 FROM envelope_partitions WHERE name = p_name AND drained) THEN
    RETURN false;
  END IF;
  EXECUTE format('DROP TABLE %I', p_name);
  DELETE FROM envelope_partitions WHERE name = p_name;
  RETURN true;
END
$fn$;

-- ACKs: one per mailbox (the highest sequence). Each cursor moves forward and credits
-- the quota with the envelopes between its old and its new position that are still
-- stored (those retirement dropped were credited then). Nothing is deleted.
--
-- Committed without waiting for the WAL flush (synchronous_commit = off for this
-- transaction only): a database crash can lose the last fraction of a second of ACKs,
-- whose envelopes are then delivered again, which at-least-once delivery allows and the
-- SDK deduplicates by envelope id.
-- Why the cursor rows are locked first, and no drained partition's row is counted:
-- Retirement credits a drained partition's expired, unacknowledged envelopes
-- (hermetic_drain_partition) and leaves them on disk until the partition is dropped,
-- which may be several ticks later (the drop waits for its table lock). An ACK passing
-- them in between counted them again (in an earlier form of this function): the mailbox's counters
-- went below zero and its quota grew by that much. Now the ACK counts no row of a drained partition: those
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

-- hermetic_store_sends as in migrations/0009 (whose header, with 0004's, describes the
-- parameters and the answers), on the log:
--   * the resend lookup reads the SEND's first target row (envelopes_send index);
--   * a resend after its TTL is stored anew as before: the expired row stops answering
--     (its send_* columns are cleared) and goes with its partition;
--   * every envelope is one row in the partition covering p_now, with the partition's
--     start as slot_ms (SQLSTATE 23514 when there is none: the caller creates it and
--     calls again); the SEND's first target row carries its idempotency record;
--   * a concurrent batch that stored one of these envelope ids first makes the insert
--     fail with a unique violation (SQLSTATE 23505, nothing written): a retry answers it
--     as a resend;
--   * p_channel NULL: no NOTIFY (the relay announces the commit on another bus).
DROP FUNCTION hermetic_store_sends(bigint, text, text, bigint, bigint, text, text, text, int[], text, text, int[], int[], int[],
  text, text, bytea, bigint[], bytea, text, int[], int[], bytea[], bytea, int[], int[]);
-- Partitions and clocks: a SEND batch on a relay whose clock is behind, finding the
-- partition that covers its time drained by another relay (retired, not yet dropped), is
-- written into the next partition that is not drained. (Failing it with SQLSTATE 23514
-- instead would fail every SEND on that relay until the drop: no partition can be made
-- while the drained one still covers that time, and the drop may wait several ticks for
-- its table lock.) The rows keep the relay's time as stored_at_ms; only slot_ms (the
-- partition) differs.
CREATE FUNCTION hermetic_store_sends(
  p_now bigint, p_channel text, p_node text, p_max_bytes bigint, p_max_count bigint, p_recipient_list text,
  p_c_user text, p_c_device text, c_count int[],
  p_t_recipient text, p_t_device text, t_box int[], t_rank int[], t_first int[],
  p_t_sender_user text, p_t_sender_device text, p_ids bytea, t_expires bigint[],
  p_hashes bytea, p_t_devices text, t_count int[], t_recipient_index int[],
  t_payload bytea[], p_blob bytea, t_offset int[], t_length int[]
) RETURNS TABLE (r_kind smallint, r_item int, r_seq bigint, r_devices text[], r_seqs bigint[], r_expires bigint)
LANGUAGE plpgsql
-- No scans (see 0004), and no JIT: with scans priced out, a lookup in the small
-- envelope_partitions table looks costly enough to be compiled, on every call (seen:
-- 50 ms per batch).
SET enable_seqscan = off
SET jit = off
AS $fn$
#variable_conflict use_column
DECLARE
  p_recipients text[] := string_to_array(p_recipient_list, ' ');
  c_user text[] := string_to_array(p_c_user, ' ');
  c_device text[] := string_to_array(p_c_device, ' ');
  t_recipient text[] := string_to_array(p_t_recipient, ' ');
  t_device text[] := string_to_array(p_t_device, ' ');
  t_sender_user text[] := string_to_array(p_t_sender_user, ' ');
  t_sender_device text[] := string_to_array(p_t_sender_device, ' ');
  t_devices text[] := string_to_array(p_t_devices, ' ', '');
  v_prior int[];
  v_prior_kind smallint[];
  v_prior_devices text[];
  v_prior_seqs text[];
  v_prior_expires bigint[];
  v_bad int[];
  v_stale int;
  v_held_bytes bigint[];
  v_held_count bigint[];
  v_full int[];
  v_full_devices text[];
  v_devices bigint[];
  v_first bigint[];
  v_boxes int;
  v_stored int;
  v_notice text;
  v_slot bigint;
  v_partition text;
  -- Widths of the fixed-width parameters (server/mailbox/send-batch.ts): envelope ids
  -- (ENVELOPE_ID_BYTES) and SHA-256 content hashes (CONTENT_HASH_BYTES); and the
  -- longest notice sent as is (PostgreSQL refuses NOTIFY payloads of 8000 bytes).
  c_id constant int := 16;
  c_hash constant int := 32;
  c_notice_max constant int := 7900;
BEGIN
  -- 0. The partition the envelopes go to, locked against draining (see
  --    hermetic_lock_partition): every row of a partition has its start as slot_ms, so
  --    that the idempotency index sees concurrent SENDs of one id as equal. The one
  --    covering p_now, or when that one is drained (this relay's clock is behind the
  --    retiring relay's), the first after it that is not (at the latest, the retiring
  --    relay's current one). None covering p_now: SQLSTATE 23514 below, and the relay
  --    makes it.
  SELECT p.name INTO v_partition FROM envelope_partitions p
   WHERE p.to_ms > p_now AND NOT p.drained
     AND (p.from_ms <= p_now
          OR EXISTS (SELECT 1 FROM envelope_partitions d WHERE d.drained AND d.from_ms <= p_now AND d.to_ms > p_now))
   ORDER BY p.from_ms LIMIT 1;
  IF v_partition IS NOT NULL THEN
    PERFORM hermetic_lock_partition(v_partition, false);
    SELECT from_ms INTO v_slot FROM envelope_partitions WHERE name = v_partition AND NOT drained;
  END IF;
  IF v_slot IS NULL THEN
    RAISE EXCEPTION 'no envelope partition covers %', p_now USING ERRCODE = '23514';
  END IF;

  -- 1. Earlier SENDs with the same ids still answering, and their answers. One whose
  --    envelope has expired answers nothing: the SEND is stored anew (v_stale).
  SELECT coalesce(array_agg(k.i::int) FILTER (WHERE s.expires_at_ms > p_now), '{}'),
         array_agg((CASE WHEN s.send_hash = substring(p_hashes FROM (k.i::int - 1) * c_hash + 1 FOR c_hash) THEN 1 ELSE 2 END)::smallint)
           FILTER (WHERE s.expires_at_ms > p_now),
         array_agg(coalesce(s.send_devices, ARRAY[s.device_id])::text) FILTER (WHERE s.expires_at_ms > p_now),
         array_agg(coalesce(s.send_seqs, ARRAY[s.seq])::text) FILTER (WHERE s.expires_at_ms > p_now),
         array_agg(s.expires_at_ms) FILTER (WHERE s.expires_at_ms > p_now),
         count(*) FILTER (WHERE s.expires_at_ms <= p_now)
    INTO v_prior, v_prior_kind, v_prior_devices, v_prior_seqs, v_prior_expires, v_stale
    FROM unnest(t_sender_user, t_sender_device, t_count) WITH ORDINALITY AS k(u, d, n, i)
    -- One index probe per SEND and partition (LATERAL ... LIMIT): a join the planner is
    -- free to plan would read the whole idempotency index of every partition (seen: a
    -- merge join over a full scan of it), which grows with the partition.
    CROSS JOIN LATERAL (
      SELECT e.send_hash, e.send_devices, e.send_seqs, e.device_id, e.seq, e.expires_at_ms FROM envelopes e
       WHERE e.sender_user = k.u AND e.sender_device = k.d
         AND e.envelope_id = substring(p_ids FROM (k.i::int - 1) * c_id + 1 FOR c_id)
         AND e.send_hash IS NOT NULL
       LIMIT 1) s
   WHERE k.n IS NOT NULL;

  -- 2. Lock the recipients' mailboxes in key order (no deadlock between batches or
  --    relays); they are held until this statement's transaction commits.
  PERFORM 1 FROM mailboxes m WHERE m.user_id = ANY (p_recipients) ORDER BY m.user_id, m.device_id FOR UPDATE;

  -- 3. Each SEND must name exactly its recipient's current devices (as in 0004).
  SELECT coalesce(array_agg(x.n ORDER BY x.j), '{}') INTO v_devices
    FROM (SELECT r.j, (SELECT count(*) FROM mailboxes m WHERE m.user_id = r.u) AS n
            FROM unnest(p_recipients) WITH ORDINALITY AS r(u, j)) x;
  SELECT coalesce(array_agg(DISTINCT b.i), '{}') INTO v_bad FROM (
    SELECT k.i::int AS i
      FROM unnest(t_count, t_recipient_index, t_recipient, t_sender_user, t_sender_device) WITH ORDINALITY AS k(n, ri, r, su, sd, i)
     WHERE k.n IS NOT NULL
       AND k.n <> v_devices[k.ri] - (CASE WHEN k.r = k.su
                                          AND EXISTS (SELECT 1 FROM mailboxes m WHERE m.user_id = k.su AND m.device_id = k.sd)
                                          THEN 1 ELSE 0 END)
    UNION ALL
    SELECT t.f FROM unnest(t_first, t_recipient, t_device, t_sender_user, t_sender_device) AS t(f, r, d, su, sd)
     WHERE t.r = t.su AND t.d = t.sd
  ) b;
  IF EXISTS (SELECT 1 FROM unnest(c_user, c_device) AS c(u, d)
              WHERE NOT EXISTS (SELECT 1 FROM mailboxes m WHERE m.user_id = c.u AND m.device_id = c.d)) THEN
    v_bad := v_bad || ARRAY(
      SELECT DISTINCT t.f FROM unnest(t_first, t_recipient, t_device) AS t(f, r, d)
       WHERE NOT EXISTS (SELECT 1 FROM mailboxes m WHERE m.user_id = t.r AND m.device_id = t.d));
  END IF;

  IF cardinality(v_prior) > 0 OR cardinality(v_bad) > 0 THEN
    RETURN QUERY
      SELECT p.k, p.i, NULL::bigint, p.ds::text[], p.ss::bigint[], p.x
        FROM unnest(v_prior, v_prior_kind, v_prior_devices, v_prior_seqs, v_prior_expires) AS p(i, k, ds, ss, x);
    RETURN QUERY
      SELECT 3::smallint, k.i::int, NULL::bigint,
             ARRAY(SELECT m.device_id FROM mailboxes m
                    WHERE m.user_id = k.r AND NOT (k.r = k.su AND m.device_id = k.sd)
                    ORDER BY m.device_id),
             NULL::bigint[], NULL::bigint
        FROM unnest(t_recipient, t_sender_user, t_sender_device) WITH ORDINALITY AS k(r, su, sd, i)
       WHERE k.i::int = ANY (v_bad) AND NOT (k.i::int = ANY (v_prior));
    RETURN;
  END IF;

  -- 3b. Quotas (as in 0009).
  SELECT array_agg(m.in_bytes - coalesce(c.out_bytes, 0) ORDER BY x.j),
         array_agg(m.in_count - coalesce(c.out_count, 0) ORDER BY x.j)
    INTO v_held_bytes, v_held_count
    FROM unnest(c_user, c_device) WITH ORDINALITY AS x(u, d, j)
    JOIN mailboxes m ON m.user_id = x.u AND m.device_id = x.d
    LEFT JOIN mailbox_cursors c ON c.user_id = x.u AND c.device_id = x.d;
  SELECT coalesce(array_agg(w.f), '{}'), array_agg(w.ds::text)
    INTO v_full, v_full_devices
    FROM (SELECT q.f, array_agg(DISTINCT q.d ORDER BY q.d) AS ds
            FROM (SELECT t.f, t.d, t.b, t.k,
                         sum(coalesce(t.l, octet_length(t.p))) OVER (PARTITION BY t.b ORDER BY t.k) AS bytes
                    FROM unnest(t_first, t_device, t_box, t_rank, t_payload, t_length) AS t(f, d, b, k, p, l)) q
           WHERE v_held_bytes[q.b] + q.bytes > p_max_bytes OR v_held_count[q.b] + q.k + 1 > p_max_count
           GROUP BY q.f) w;
  IF cardinality(v_full) > 0 THEN
    RETURN QUERY
      SELECT 4::smallint, w.f, NULL::bigint, w.ds::text[], NULL::bigint[], NULL::bigint
        FROM unnest(v_full, v_full_devices) AS w(f, ds);
    RETURN;
  END IF;

  -- 4. Every SEND can be stored: earlier expired SENDs with these ids stop answering,
  --    take the sequences, append the envelopes.
  IF v_stale > 0 THEN
    UPDATE envelopes s SET send_hash = NULL, send_devices = NULL, send_seqs = NULL
      FROM unnest(t_sender_user, t_sender_device, t_count) WITH ORDINALITY AS k(u, d, n, i)
     WHERE k.n IS NOT NULL AND s.sender_user = k.u AND s.sender_device = k.d
       AND s.envelope_id = substring(p_ids FROM (k.i::int - 1) * c_id + 1 FOR c_id)
       AND s.send_hash IS NOT NULL AND s.expires_at_ms <= p_now;
  END IF;
  WITH sizes AS (
    SELECT t.b, sum(coalesce(t.l, octet_length(t.p)))::bigint AS bytes
      FROM unnest(t_box, t_payload, t_length) AS t(b, p, l) GROUP BY t.b
  ), bumped AS (
    UPDATE mailboxes m SET next_seq = m.next_seq + c.n, in_count = m.in_count + c.n, in_bytes = m.in_bytes + z.bytes
      FROM unnest(c_user, c_device, c_count) WITH ORDINALITY AS c(u, d, n, j)
      JOIN sizes z ON z.b = c.j
     WHERE m.user_id = c.u AND m.device_id = c.d
    RETURNING c.j, m.next_seq - c.n AS first
  )
  SELECT array_agg(b.first ORDER BY b.j), count(*) INTO v_first, v_boxes FROM bumped b;
  IF v_boxes <> cardinality(c_user) THEN
    RAISE EXCEPTION 'a target mailbox is missing after the device check';
  END IF;

  WITH stored AS (
    INSERT INTO envelopes (slot_ms, user_id, device_id, seq, envelope_id, sender_user, sender_device, stored_at_ms, expires_at_ms,
                           size, send_hash, send_devices, send_seqs, payload)
    SELECT v_slot, t.r, t.d, v_first[t.b] + t.k, substring(p_ids FROM (t.i::int - 1) * c_id + 1 FOR c_id), t.su, t.sd, p_now, t.x,
           coalesce(t.l, octet_length(t.p)),
           CASE WHEN t.n IS NOT NULL THEN substring(p_hashes FROM (t.i::int - 1) * c_hash + 1 FOR c_hash) END,
           CASE WHEN t.n > 1 THEN t.ds::text[] END,
           CASE WHEN t.n > 1 THEN ARRAY(SELECT v_first[t_box[g]] + t_rank[g] FROM generate_series(t.i::int, t.i::int + t.n - 1) AS g ORDER BY g) END,
           coalesce(t.p, substring(p_blob FROM t.o FOR t.l))
      FROM unnest(t_recipient, t_device, t_box, t_rank, t_sender_user, t_sender_device, t_expires, t_payload, t_offset, t_length,
                  t_count, t_devices)
        WITH ORDINALITY AS t(r, d, b, k, su, sd, x, p, o, l, n, ds, i)
     -- In key order: two batches in flight that share envelope ids (one sender reusing an
     -- id for two recipients) then wait for each other in one direction only, never in a
     -- cycle.
     ORDER BY t.su COLLATE "C", t.sd COLLATE "C", substring(p_ids FROM (t.i::int - 1) * c_id + 1 FOR c_id)
    RETURNING 1
  )
  SELECT count(*) INTO v_stored FROM stored;
  IF v_stored <> cardinality(t_box) THEN
    RAISE EXCEPTION 'stored % envelopes of %', v_stored, cardinality(t_box);
  END IF;

  -- 5. One NOTIFY for the whole commit (as in 0004), unless announced elsewhere.
  IF p_channel IS NOT NULL THEN
    v_notice := json_build_object('node', p_node, 'kind', 'tails',
      'tails', (SELECT json_agg(json_build_array(x.u, x.d, x.f + x.n - 1)) FROM unnest(c_user, c_device, v_first, c_count) AS x(u, d, f, n)))::text;
    IF octet_length(v_notice) > c_notice_max THEN
      v_notice := json_build_object('node', p_node, 'kind', 'all')::text;
    END IF;
    PERFORM pg_notify(p_channel, v_notice);
  END IF;

  RETURN QUERY
    SELECT 0::smallint, x.j::int, x.f, NULL::text[], NULL::bigint[], NULL::bigint
      FROM unnest(v_first) WITH ORDINALITY AS x(f, j);
END
$fn$;
