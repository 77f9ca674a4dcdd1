-- hermetic_live_slots (migrations/0013) found a partition's rows by slot_ms equal to the
-- partition's start, and bounded lookups by that start. The envelopes that 0011 moved
-- into its first partition, envelopes_0 [0, the upgrade), keep their stored time as
-- slot_ms, not 0: while that partition was the newest holding rows (after an upgrade,
-- until the first SEND lands in a later one) they were not seen at all, so an ACK passing
-- them credited nothing (the quota counters kept them for good), and even behind a newer
-- partition holding rows the bound would miss any such row in the newest one. The test
-- for rows is now the partition's whole range, and r_to the partition's last
-- millisecond: callers keep `slot_ms <= r_to`, which now takes in the whole partition.
-- (Every row written since 0011 has its partition's start as slot_ms, so nothing else
-- changes.)
CREATE OR REPLACE FUNCTION hermetic_live_slots(OUT r_from bigint, OUT r_to bigint)
LANGUAGE sql STABLE AS $$
  SELECT (SELECT min(p.from_ms) FROM envelope_partitions p WHERE NOT p.drained),
         -- LATERAL ... LIMIT 1: one row looked for per partition, newest first (an EXISTS
         -- may be planned as a hashed subplan reading every row of the table); the range
         -- prunes the scan to that partition, every row of which matches it.
         (SELECT p.to_ms - 1 FROM envelope_partitions p
            CROSS JOIN LATERAL (SELECT 1 FROM envelopes e WHERE e.slot_ms >= p.from_ms AND e.slot_ms < p.to_ms LIMIT 1) x
           WHERE NOT p.drained ORDER BY p.from_ms DESC LIMIT 1)
$$;
