-- Per-mailbox quotas, a sweeper that keeps up, and a deterministic answer to a resend
-- after its TTL.
--
-- What a mailbox holds is counted, not measured: mailboxes.in_bytes / in_count add up
-- every envelope ever stored in it (bumped by hermetic_store_sends in the same UPDATE
-- that takes its sequences, under the mailbox row lock), and mailbox_cursors.out_bytes /
-- out_count every envelope removed from it (by ACKs, the expiry sweeper, or a resend
-- after the TTL replacing its record). Held = in - out. Removals credit the cursor row,
-- not the mailbox row, so that ACKs still never wait for the row lock SENDs hold. A SEND
-- reads the cursor without locking it: a removal it does not see yet only makes the
-- mailbox look fuller than it is, so the quota is never exceeded, whatever the number of
-- relays. Bytes are payload bytes (octet_length of each envelope's payload).
ALTER TABLE mailboxes
  ADD COLUMN in_bytes bigint NOT NULL DEFAULT 0,
  ADD COLUMN in_count bigint NOT NULL DEFAULT 0;
ALTER TABLE mailbox_cursors
  ADD COLUMN out_bytes bigint NOT NULL DEFAULT 0,
  ADD COLUMN out_count bigint NOT NULL DEFAULT 0;
-- What is stored now counts as held.
UPDATE mailboxes m SET in_bytes = s.b, in_count = s.n
  FROM (SELECT user_id, device_id, sum(octet_length(payload))::bigint AS b, count(*) AS n
          FROM envelopes GROUP BY user_id, device_id) s
 WHERE m.user_id = s.user_id AND m.device_id = s.device_id;

-- Removes envelopes by key and credits what was removed to their mailboxes' out_*
-- counters. Only rows this call deleted count, so removals racing each other (an ACK and
-- the sweeper) never count an envelope twice. Cursor rows are written in key order
-- (COLLATE "C", like the ACK path), so two removals never wait for each other in a cycle.
CREATE OR REPLACE FUNCTION hermetic_remove_envelopes(p_user text[], p_device text[], p_seq bigint[]) RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
  v_removed bigint;
BEGIN
  -- Planned for these values each time (EXECUTE): called with one resend's envelopes or
  -- with a sweep batch's thousands, which want different plans.
  EXECUTE 'WITH gone AS (
             DELETE FROM envelopes e
              USING unnest($1, $2, $3) AS t(u, d, s)
              WHERE e.user_id = t.u AND e.device_id = t.d AND e.seq = t.s
             RETURNING e.user_id, e.device_id, octet_length(e.payload)::bigint AS b
           ), freed AS (
             SELECT user_id, device_id, sum(b)::bigint AS b, count(*) AS n FROM gone GROUP BY user_id, device_id
           ), credited AS (
             INSERT INTO mailbox_cursors AS c (user_id, device_id, out_bytes, out_count)
             SELECT f.user_id, f.device_id, f.b, f.n FROM freed f
              ORDER BY f.user_id COLLATE "C", f.device_id COLLATE "C"
             ON CONFLICT (user_id, device_id) DO UPDATE
               SET out_bytes = c.out_bytes + EXCLUDED.out_bytes, out_count = c.out_count + EXCLUDED.out_count
             RETURNING 1
           )
           -- (credited runs whether or not it is read, as every data-modifying WITH does)
           SELECT coalesce(sum(n), 0)::bigint FROM freed'
    INTO v_removed
    USING p_user, p_device, p_seq;
  RETURN v_removed;
END
$fn$;

-- ACKs as before (migrations/0005), now crediting what they remove.
CREATE OR REPLACE FUNCTION hermetic_apply_acks(p_user text[], p_device text[], p_seq bigint[]) RETURNS void
LANGUAGE plpgsql
-- Every access here is by key; a plan cached while the tables were small must not scan
-- them once they are not (see hermetic_store_sends).
SET enable_seqscan = off
AS $fn$
#variable_conflict use_column
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  -- The envelopes go first, then one upsert per cursor moves it and credits what went
  -- (all of it in one statement: the removal finishes before any cursor row is locked).
  WITH gone AS (
    DELETE FROM envelopes e
     USING unnest(p_user, p_device, p_seq) AS a(u, d, s)
     WHERE e.user_id = a.u AND e.device_id = a.d AND e.seq <= a.s
    RETURNING e.user_id, e.device_id, octet_length(e.payload)::bigint AS b
  ), freed AS (
    SELECT g.user_id, g.device_id, sum(g.b)::bigint AS b, count(*) AS n FROM gone g GROUP BY g.user_id, g.device_id
  )
  INSERT INTO mailbox_cursors AS c (user_id, device_id, acked_seq, out_bytes, out_count)
  SELECT a.u, a.d, a.s, coalesce(f.b, 0), coalesce(f.n, 0)
    FROM unnest(p_user, p_device, p_seq) AS a(u, d, s)
    LEFT JOIN freed f ON f.user_id = a.u AND f.device_id = a.d
   ORDER BY a.u COLLATE "C", a.d COLLATE "C"
  ON CONFLICT (user_id, device_id) DO UPDATE
    SET acked_seq = GREATEST(c.acked_seq, EXCLUDED.acked_seq),
        out_bytes = c.out_bytes + EXCLUDED.out_bytes,
        out_count = c.out_count + EXCLUDED.out_count;
END
$fn$;

-- One batch of the expiry sweeper: at most p_limit expired SEND records (found through
-- sent_envelopes_expiry, oldest first) and, by primary key, the envelopes they stored
-- that are still there. Returns the records and envelopes removed. The caller repeats
-- batches until one comes back short (caught up) or its time budget for the tick is
-- spent; each batch is its own short transaction, so SENDs and ACKs interleave.
-- Records another batch holds (a second sweeper of this relay, or another relay's) are
-- skipped, not waited for: concurrent sweepers share the backlog instead of queueing
-- behind each other's locks.
CREATE OR REPLACE FUNCTION hermetic_sweep(p_now bigint, p_limit int, OUT r_sends bigint, OUT r_envelopes bigint)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $fn$
DECLARE
  v_user text[];
  v_device text[];
  v_seq bigint[];
BEGIN
  WITH gone AS (
    DELETE FROM sent_envelopes WHERE ctid = ANY (ARRAY(
      SELECT ctid FROM sent_envelopes WHERE expires_at_ms <= p_now ORDER BY expires_at_ms LIMIT p_limit
         FOR UPDATE SKIP LOCKED))
    RETURNING recipient_user, device_ids, seqs
  ), t AS (
    SELECT g.recipient_user AS u, x.d, x.s FROM gone g, unnest(g.device_ids, g.seqs) AS x(d, s)
  )
  SELECT (SELECT count(*) FROM gone), array_agg(t.u), array_agg(t.d), array_agg(t.s)
    INTO r_sends, v_user, v_device, v_seq FROM t;
  r_sends := coalesce(r_sends, 0);
  r_envelopes := CASE WHEN v_user IS NULL THEN 0 ELSE hermetic_remove_envelopes(v_user, v_device, v_seq) END;
END
$fn$;

-- hermetic_store_sends as in migrations/0004, with two changes (the header there
-- describes the parameters and answers):
--   * p_max_bytes, p_max_count: the quota of every target mailbox. A SEND that would take
--     a mailbox past either is answered with a row of kind
--       4  the SEND at r_item would overfill a target mailbox: r_devices names those
--          mailboxes (devices of the SEND's recipient) (refused).
--   * a resend after its TTL is stored anew (fresh sequences, not a duplicate); before
--     its TTL it is answered from its record, as before.
-- The signature changes, so the old function is dropped.
DROP FUNCTION hermetic_store_sends(bigint, text, text, text, text, text, int[], text, text, int[], int[], int[],
  text, text, bytea, bigint[], bytea, text, int[], int[], bytea[], bytea, int[], int[]);
CREATE OR REPLACE FUNCTION hermetic_store_sends(
  p_now bigint, p_channel text, p_node text, p_max_bytes bigint, p_max_count bigint, p_recipient_list text,
  p_c_user text, p_c_device text, c_count int[],
  p_t_recipient text, p_t_device text, t_box int[], t_rank int[], t_first int[],
  p_t_sender_user text, p_t_sender_device text, p_ids bytea, t_expires bigint[],
  p_hashes bytea, p_t_devices text, t_count int[], t_recipient_index int[],
  t_payload bytea[], p_blob bytea, t_offset int[], t_length int[]
) RETURNS TABLE (r_kind smallint, r_item int, r_seq bigint, r_devices text[], r_seqs bigint[], r_expires bigint)
LANGUAGE plpgsql
-- Every table access here is by key. The plans cached for these statements are made
-- once per connection, possibly while the tables are nearly empty, when a scan of the
-- whole table looks cheapest; such a plan would stay in use as the tables grow (seen:
-- the resend lookup scanning sent_envelopes). So the planner is told not to scan.
SET enable_seqscan = off
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
  v_sends int;
  v_stored int;
  v_recorded int;
  v_notice text;
BEGIN
  -- 1. Earlier SENDs with the same ids, and their answers (kept from this one read, so
  --    that a record the sweeper removes meanwhile still gets its answer).
  --    A record whose envelope has expired (expires_at_ms <= p_now) answers nothing: the
  --    SEND is stored anew, with fresh sequences, and its old record and whatever the
  --    sweeper has not yet removed of its envelopes are replaced in step 4 (v_stale).
  SELECT coalesce(array_agg(k.i::int) FILTER (WHERE s.expires_at_ms > p_now), '{}'),
         array_agg((CASE WHEN s.content_hash = substring(p_hashes FROM (k.i::int - 1) * 32 + 1 FOR 32) THEN 1 ELSE 2 END)::smallint)
           FILTER (WHERE s.expires_at_ms > p_now),
         array_agg(s.device_ids::text) FILTER (WHERE s.expires_at_ms > p_now),
         array_agg(s.seqs::text) FILTER (WHERE s.expires_at_ms > p_now),
         array_agg(s.expires_at_ms) FILTER (WHERE s.expires_at_ms > p_now),
         count(*) FILTER (WHERE s.expires_at_ms <= p_now)
    INTO v_prior, v_prior_kind, v_prior_devices, v_prior_seqs, v_prior_expires, v_stale
    FROM unnest(t_sender_user, t_sender_device, t_count) WITH ORDINALITY AS k(u, d, n, i)
    JOIN sent_envelopes s ON s.sender_user = k.u AND s.sender_device = k.d
                         AND s.envelope_id = substring(p_ids FROM (k.i::int - 1) * 16 + 1 FOR 16)
   WHERE k.n IS NOT NULL;

  -- 2. Lock the recipients' mailboxes in key order (no deadlock between batches or
  --    relays); they are held until this statement's transaction commits.
  PERFORM 1 FROM mailboxes m WHERE m.user_id = ANY (p_recipients) ORDER BY m.user_id, m.device_id FOR UPDATE;

  -- 3. Each SEND must name exactly its recipient's current devices (to one's own user:
  --    all but the sending device). Targets are distinct, so that is: as many targets
  --    as such devices, each target one of them.
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

  -- 3b. Quotas: each target mailbox holds at most p_max_count envelopes and p_max_bytes
  --     payload bytes. Its envelopes in this batch are taken in order (t_rank); a SEND
  --     with a target past either bound is refused (kind 4) with the mailboxes that are
  --     full, and the caller stores the rest in the next call: the SENDs before it in
  --     each mailbox, and SENDs to other mailboxes. Read under the mailbox locks, so
  --     exact whatever the number of relays (see the counters above).
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

  -- 4. Every SEND can be stored: replace the records of expired SENDs with these ids,
  --    take the sequences, store the envelopes, record the SENDs.
  IF v_stale > 0 THEN
    PERFORM hermetic_remove_envelopes(array_agg(x.u), array_agg(x.d), array_agg(x.s))
       FROM (SELECT s.recipient_user AS u, y.d, y.s
               FROM unnest(t_sender_user, t_sender_device, t_count) WITH ORDINALITY AS k(u, d, n, i)
               JOIN sent_envelopes s ON s.sender_user = k.u AND s.sender_device = k.d
                                    AND s.envelope_id = substring(p_ids FROM (k.i::int - 1) * 16 + 1 FOR 16)
                                    AND s.expires_at_ms <= p_now,
                    unnest(s.device_ids, s.seqs) AS y(d, s)
              WHERE k.n IS NOT NULL) x;
    DELETE FROM sent_envelopes s
     USING unnest(t_sender_user, t_sender_device, t_count) WITH ORDINALITY AS k(u, d, n, i)
     WHERE k.n IS NOT NULL AND s.sender_user = k.u AND s.sender_device = k.d
       AND s.envelope_id = substring(p_ids FROM (k.i::int - 1) * 16 + 1 FOR 16)
       AND s.expires_at_ms <= p_now;
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
    INSERT INTO envelopes (user_id, device_id, seq, envelope_id, sender_user, sender_device, stored_at_ms, expires_at_ms, payload)
    SELECT t.r, t.d, v_first[t.b] + t.k, substring(p_ids FROM (t.i::int - 1) * 16 + 1 FOR 16), t.su, t.sd, p_now, t.x,
           coalesce(t.p, substring(p_blob FROM t.o FOR t.l))
      FROM unnest(t_recipient, t_device, t_box, t_rank, t_sender_user, t_sender_device, t_expires, t_payload, t_offset, t_length)
        WITH ORDINALITY AS t(r, d, b, k, su, sd, x, p, o, l, i)
    RETURNING 1
  ), recorded AS (
    INSERT INTO sent_envelopes (sender_user, sender_device, envelope_id, content_hash, recipient_user, device_ids, seqs, expires_at_ms)
    SELECT t.su, t.sd, substring(p_ids FROM (t.i::int - 1) * 16 + 1 FOR 16), substring(p_hashes FROM (t.i::int - 1) * 32 + 1 FOR 32),
           t.r, t.ds::text[],
           CASE WHEN t.n = 1 THEN ARRAY[v_first[t.b] + t.k]
                ELSE ARRAY(SELECT v_first[t_box[g]] + t_rank[g] FROM generate_series(t.i::int, t.i::int + t.n - 1) AS g ORDER BY g)
           END,
           t.x
      FROM unnest(t_sender_user, t_sender_device, t_recipient, t_devices, t_box, t_rank, t_count, t_expires)
        WITH ORDINALITY AS t(su, sd, r, ds, b, k, n, x, i)
     WHERE t.n IS NOT NULL
     -- In key order: two batches in flight that share envelope ids (one sender reusing an
     -- id for two recipients) then wait for each other in one direction only, never in a
     -- cycle.
     ORDER BY t.su COLLATE "C", t.sd COLLATE "C", substring(p_ids FROM (t.i::int - 1) * 16 + 1 FOR 16)
    ON CONFLICT DO NOTHING
    RETURNING 1
  )
  SELECT (SELECT count(*) FROM stored), (SELECT count(*) FROM recorded), (SELECT count(*) FROM unnest(t_count) AS n WHERE n IS NOT NULL)
    INTO v_stored, v_recorded, v_sends;
  IF v_recorded <> v_sends THEN
    RAISE EXCEPTION 'a concurrent transaction recorded one of these envelope ids' USING ERRCODE = 'HR001';
  END IF;
  IF v_stored <> cardinality(t_box) THEN
    RAISE EXCEPTION 'stored % envelopes of %', v_stored, cardinality(t_box);
  END IF;

  -- 5. One NOTIFY for the whole commit: each mailbox's new tail, or "all" when too long
  --    for a notification payload (under 8000 bytes).
  v_notice := json_build_object('node', p_node, 'kind', 'tails',
    'tails', (SELECT json_agg(json_build_array(x.u, x.d, x.f + x.n - 1)) FROM unnest(c_user, c_device, v_first, c_count) AS x(u, d, f, n)))::text;
  IF octet_length(v_notice) > 7900 THEN
    v_notice := json_build_object('node', p_node, 'kind', 'all')::text;
  END IF;
  PERFORM pg_notify(p_channel, v_notice);

  RETURN QUERY
    SELECT 0::smallint, x.j::int, x.f, NULL::text[], NULL::bigint[], NULL::bigint
      FROM unnest(v_first) WITH ORDINALITY AS x(f, j);
END
$fn$;
