-- The store path's per-SEND work, measured (docs/PERFORMANCE.md) and cut:
--
-- * The resend lookup probed the idempotency index once per SEND and per partition (a
--   batch of 512 SENDs with 8 partitions: 4,096 index probes, more time than the
--   append). The index now leads with the envelope id, and the lookup is one scan per
--   partition for the whole batch (envelope_id = ANY), limited to the partitions that
--   can answer: not drained, and holding rows (the partitions made ahead are empty).
-- * The bytes per mailbox were joined to the mailboxes in a nested loop that rescanned
--   the per-mailbox sums for each mailbox; they are an array indexed by mailbox now.
-- * An ACK counted the envelopes it passes in every partition, drained and empty ones
--   included; they are pruned by bounds on slot_ms too.
--
-- Both functions are otherwise as in migrations/0011 (see there).

-- The slots between which live envelopes are: from the first partition not drained
-- (its start) to the end of the last that holds a row (its last millisecond): partitions
-- are made ahead of the clock and are empty until their time comes, or a relay whose
-- clock is ahead writes there. Bounds on slot_ms prune a lookup by key to those
-- partitions. NULL r_to: no partition holds a row. A partition is tested for rows over
-- its whole range, not at its start alone: every row written since migrations/0011 has
-- its partition's start as slot_ms, but the envelopes 0011 moved into envelopes_0 keep
-- their stored time.
-- A row committed before the caller's statement started is seen, so an ACK counting the
-- envelopes it passes (all delivered, so committed before) or a resend looking for its
-- first SEND finds it within these bounds.
CREATE FUNCTION hermetic_live_slots(OUT r_from bigint, OUT r_to bigint)
LANGUAGE sql STABLE AS $$
  SELECT (SELECT min(p.from_ms) FROM envelope_partitions p WHERE NOT p.drained),
         -- LATERAL ... LIMIT 1: one row looked for per partition, newest first (an EXISTS
         -- may be planned as a hashed subplan reading every row of the table); the range
         -- prunes the scan to that partition.
         (SELECT p.to_ms - 1 FROM envelope_partitions p
            CROSS JOIN LATERAL (SELECT 1 FROM envelopes e WHERE e.slot_ms >= p.from_ms AND e.slot_ms < p.to_ms LIMIT 1) x
           WHERE NOT p.drained ORDER BY p.from_ms DESC LIMIT 1)
$$;

-- Rebuilt with the envelope id first. The rebuild reads every stored envelope and holds
-- the table meanwhile (a partitioned index cannot be built concurrently): a few seconds
-- per million envelopes the log holds, during which SENDs wait.
DROP INDEX envelopes_send;
CREATE UNIQUE INDEX envelopes_send ON envelopes (envelope_id, sender_user, sender_device, slot_ms) WHERE send_hash IS NOT NULL;

CREATE OR REPLACE FUNCTION hermetic_store_sends(
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
  v_full int[] := '{}';
  v_full_devices text[];
  v_devices bigint[];
  v_first bigint[];
  v_boxes int;
  v_stored int;
  v_notice text;
  v_slot bigint;
  v_partition text;
  v_probe_from bigint;
  v_probe_to bigint;
  v_box_bytes bigint[];
  v_ids bytea[];
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
  -- The partitions a resend can be answered from (hermetic_live_slots).
  SELECT r_from, r_to INTO v_probe_from, v_probe_to FROM hermetic_live_slots();

  -- 1. Earlier SENDs with the same ids still answering, and their answers. One whose
  --    envelope has expired answers nothing: the SEND is stored anew (v_stale).
  --    One index scan per partition for the whole batch (envelope_id = ANY, on
  --    envelopes_send, whose first column is the envelope id), then, only when one of
  --    the ids is found (a resend, or another sender's id), matched to the SENDs by
  --    sender: a probe per SEND and partition cost more than the append itself.
  v_ids := ARRAY(SELECT substring(p_ids FROM (k.i::int - 1) * c_id + 1 FOR c_id)
                   FROM unnest(t_count) WITH ORDINALITY AS k(n, i) WHERE k.n IS NOT NULL);
  v_prior := '{}';
  v_stale := 0;
  IF EXISTS (SELECT 1 FROM envelopes e
              WHERE e.envelope_id = ANY (v_ids) AND e.send_hash IS NOT NULL
                AND e.slot_ms >= v_probe_from AND e.slot_ms <= v_probe_to) THEN
    WITH k AS (
      SELECT k.u, k.d, k.i::int AS i, substring(p_ids FROM (k.i::int - 1) * c_id + 1 FOR c_id) AS id
        FROM unnest(t_sender_user, t_sender_device, t_count) WITH ORDINALITY AS k(u, d, n, i)
       WHERE k.n IS NOT NULL
    ), s AS MATERIALIZED (
      SELECT e.envelope_id, e.sender_user, e.sender_device, e.send_hash, e.send_devices, e.send_seqs, e.device_id, e.seq, e.expires_at_ms
        FROM envelopes e
       WHERE e.envelope_id = ANY (v_ids)
         AND e.send_hash IS NOT NULL
         AND e.slot_ms >= v_probe_from AND e.slot_ms <= v_probe_to
    )
    SELECT coalesce(array_agg(k.i) FILTER (WHERE s.expires_at_ms > p_now), '{}'),
           array_agg((CASE WHEN s.send_hash = substring(p_hashes FROM (k.i - 1) * c_hash + 1 FOR c_hash) THEN 1 ELSE 2 END)::smallint)
             FILTER (WHERE s.expires_at_ms > p_now),
           array_agg(coalesce(s.send_devices, ARRAY[s.device_id])::text) FILTER (WHERE s.expires_at_ms > p_now),
           array_agg(coalesce(s.send_seqs, ARRAY[s.seq])::text) FILTER (WHERE s.expires_at_ms > p_now),
           array_agg(s.expires_at_ms) FILTER (WHERE s.expires_at_ms > p_now),
           count(*) FILTER (WHERE s.expires_at_ms <= p_now)
      INTO v_prior, v_prior_kind, v_prior_devices, v_prior_seqs, v_prior_expires, v_stale
      FROM k JOIN LATERAL (
        -- At most one answering row per SEND (the unique index keys one per partition; a
        -- carried row answers nothing): the newest.
        SELECT s.* FROM s WHERE s.envelope_id = k.id AND s.sender_user = k.u AND s.sender_device = k.d
         ORDER BY s.expires_at_ms DESC LIMIT 1) s ON true;
  END IF;

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

  -- 3b. Quotas (as in 0009). Which SENDs would overfill a mailbox is only worked out
  --     when the batch as a whole would overfill one.
  --     Bytes per mailbox, indexed by its position in c_user (t_box numbers them 1..n).
  SELECT array_agg(z.bytes ORDER BY z.b) INTO v_box_bytes
    FROM (SELECT t.b, sum(coalesce(t.l, octet_length(t.p)))::bigint AS bytes
            FROM unnest(t_box, t_payload, t_length) AS t(b, p, l) GROUP BY t.b) z;
  SELECT array_agg(m.in_bytes - coalesce(c.out_bytes, 0) ORDER BY x.j),
         array_agg(m.in_count - coalesce(c.out_count, 0) ORDER BY x.j)
    INTO v_held_bytes, v_held_count
    FROM unnest(c_user, c_device) WITH ORDINALITY AS x(u, d, j)
    JOIN mailboxes m ON m.user_id = x.u AND m.device_id = x.d
    LEFT JOIN mailbox_cursors c ON c.user_id = x.u AND c.device_id = x.d;
  IF EXISTS (SELECT 1 FROM unnest(v_held_bytes, v_held_count, v_box_bytes, c_count) AS h(hb, hc, bb, n)
              WHERE h.hb + h.bb > p_max_bytes OR h.hc + h.n > p_max_count) THEN
    SELECT coalesce(array_agg(w.f), '{}'), array_agg(w.ds::text)
      INTO v_full, v_full_devices
      FROM (SELECT q.f, array_agg(DISTINCT q.d ORDER BY q.d) AS ds
              FROM (SELECT t.f, t.d, t.b, t.k,
                           sum(coalesce(t.l, octet_length(t.p))) OVER (PARTITION BY t.b ORDER BY t.k) AS bytes
                      FROM unnest(t_first, t_device, t_box, t_rank, t_payload, t_length) AS t(f, d, b, k, p, l)) q
             WHERE v_held_bytes[q.b] + q.bytes > p_max_bytes OR v_held_count[q.b] + q.k + 1 > p_max_count
             GROUP BY q.f) w;
  END IF;
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
       AND s.send_hash IS NOT NULL AND s.expires_at_ms <= p_now
       AND s.slot_ms >= v_probe_from AND s.slot_ms <= v_probe_to;
  END IF;
  WITH bumped AS (
    UPDATE mailboxes m SET next_seq = m.next_seq + c.n, in_count = m.in_count + c.n, in_bytes = m.in_bytes + v_box_bytes[c.j]
      FROM unnest(c_user, c_device, c_count) WITH ORDINALITY AS c(u, d, n, j)
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

CREATE OR REPLACE FUNCTION hermetic_apply_acks(p_user text[], p_device text[], p_seq bigint[]) RETURNS void
LANGUAGE plpgsql
-- Every access here is by key (see 0011).
SET enable_seqscan = off
SET jit = off
AS $fn$
DECLARE
  v_from bigint[];
  v_to bigint[];
  v_live_from bigint;
  v_live_to bigint;
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
  -- Only the partitions that can hold the envelopes passed (hermetic_live_slots): the
  -- drained ones (retired oldest first, so they usually all lie before the first one not
  -- drained; the NOT EXISTS below still excludes any other) and the empty ones ahead are
  -- pruned from the count.
  SELECT r_from, r_to INTO v_live_from, v_live_to FROM hermetic_live_slots();
  WITH cur AS (
    SELECT c.user_id, c.device_id, c.acked_seq AS old_seq, a.s AS new_seq
      FROM mailbox_cursors c JOIN unnest(p_user, p_device, p_seq) AS a(u, d, s) ON c.user_id = a.u AND c.device_id = a.d
     WHERE a.s > c.acked_seq
  ), freed AS (
    SELECT cur.user_id, cur.device_id, cur.new_seq, coalesce(x.b, 0)::bigint AS b, x.n
      FROM cur, LATERAL (SELECT sum(e.size) AS b, count(*) AS n FROM envelopes e
                          WHERE e.user_id = cur.user_id AND e.device_id = cur.device_id
                            AND e.seq > cur.old_seq AND e.seq <= cur.new_seq
                            AND e.slot_ms >= v_live_from AND e.slot_ms <= v_live_to
                            AND NOT EXISTS (SELECT 1 FROM unnest(v_from, v_to) AS d(f, t) WHERE e.slot_ms >= d.f AND e.slot_ms < d.t)) x
  )
  UPDATE mailbox_cursors c
     SET acked_seq = greatest(c.acked_seq, f.new_seq), out_bytes = c.out_bytes + f.b, out_count = c.out_count + f.n
    FROM freed f
   WHERE c.user_id = f.user_id AND c.device_id = f.device_id;
END
$fn$;
