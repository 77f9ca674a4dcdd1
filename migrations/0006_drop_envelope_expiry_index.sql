-- Every stored envelope has its SEND's idempotency record (sent_envelopes) until the
-- same expiry time, and that record names the envelope's mailboxes and sequences. The
-- expiry sweeper therefore finds expired envelopes through sent_envelopes' expiry index
-- and removes them by primary key, and the hot envelopes table no longer maintains an
-- index of its own for expiry on every insert.
--
-- The sweeper before this one removed envelopes and records separately, so an expired
-- envelope may already have lost its record: remove every expired envelope now, while
-- the index can still find them.
DELETE FROM envelopes WHERE expires_at_ms <= (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
DROP INDEX envelopes_expiry;
