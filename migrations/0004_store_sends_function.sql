-- One group-committed batch of SENDs in one statement: one round trip and one implicit
-- transaction. The mailbox row locks are held only while this function runs and its
-- commit is flushed.
--
-- The relay numbers the batch's envelopes within each mailbox itself (which mailbox, and
-- which place in it), so the function only reads each mailbox's next sequence once.
-- Every statement reads its arrays front to back (unnest) or by position in an integer
-- array or a fixed-width binary string (O(1)); none joins one array to another, so the
-- plans PostgreSQL caches for the function suit any batch size, and nothing is planned
-- per call.
--
-- A batch is stored only if every SEND in it can be: otherwise nothing is written and
-- the SENDs that cannot be stored are reported (earlier SENDs with the same ids, and
-- SENDs whose targets are not the recipient's current devices); the caller answers
-- those and calls again with the rest.
--
-- Parameters are cheap to send and to read: lists of ids as one space-separated string
-- (user and device ids never contain spaces), integers as array literals, envelope ids
-- and content hashes as fixed-width binary strings, payloads packed into one binary
-- string (or, in process, as an array).
--
-- One element per target, SENDs in order and each SEND's targets in order:
--   t_recipient, t_device         the target mailbox
--   t_box, t_rank                 its mailbox's position in c_* (1-based), and the
--                                 envelope's place among the batch's envelopes for that
--                                 mailbox (0-based): its sequence is next_seq + t_rank
--   t_first                       the position of its SEND's first target (the SEND's
--                                 "item" number in the answer)
--   t_sender_user, t_sender_device, t_expires, p_ids (16 bytes each)   its SEND's
--   p_hashes (32 bytes each)      its SEND's content hash
--   t_devices, t_count, t_recipient_index   its SEND's target list (a text[] literal),
--                                 number of targets and recipient's position in
--                                 p_recipients: on the SEND's first target only (the
--                                 others: an empty word, NULL, NULL)
--   t_payload | p_blob + t_offset + t_length   the payloads, as an array or packed
-- One element per distinct target mailbox: c_user, c_device, c_count (its envelopes).
-- p_recipients: the batch's distinct recipient users.
--
-- Output rows, by r_kind:
--   0  mailbox r_item of c_* received envelopes from sequence r_seq on (stored).
--   1  the SEND at r_item was sent before with the same content: r_devices, r_seqs and
--      r_expires are the original answer.
--   2  the SEND at r_item was sent before with different content (refused).
--   3  the SEND at r_item does not name its recipient's current devices (refused):
--      r_devices is the list it should name.
-- SQLSTATE HR001: a concurrent transaction recorded one of these envelope ids first;
-- nothing was written, and a retry answers it as a resend.
CREATE FUNCTION hermetic_store_sends(
  p_now bigint, p_channel text, p_node text, p_recipient_list text,
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
  SELECT coalesce(array_agg(k.i::int), '{}'),
         array_agg((CASE WHEN s.content_hash = substring(p_hashes FROM (k.i::int - 1) * 32 + 1 FOR 32) THEN 1 ELSE 2 END)::smallint),
         array_agg(s.device_ids::text), array_agg(s.seqs::text), array_agg(s.expires_at_ms)
    INTO v_prior, v_prior_kind, v_prior_devices, v_prior_seqs, v_prior_expires
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

  -- 4. Every SEND can be stored: take the sequences, store the envelopes, record the
  --    SENDs.
  WITH bumped AS (
    UPDATE mailboxes m SET next_seq = m.next_seq + c.n
      FROM unnest(c_user, c_device, c_count) WITH ORDINALITY AS c(u, d, n, j)
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
