-- Mailboxes: one per device. next_seq is the next per-mailbox sequence number to assign;
-- it is bumped in the same transaction that inserts the envelopes, under the row lock,
-- so sequences are strictly increasing and gap-free across any number of relays.
CREATE TABLE mailboxes (
  user_id   text   NOT NULL,
  device_id text   NOT NULL,
  next_seq  bigint NOT NULL DEFAULT 1 CHECK (next_seq >= 1),
  PRIMARY KEY (user_id, device_id),
  FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
INSERT INTO mailboxes (user_id, device_id) SELECT user_id, device_id FROM devices;

-- The device's cumulative acknowledgement. Kept apart from mailboxes so that ACKs never
-- contend for the row lock that SENDs take.
CREATE TABLE mailbox_cursors (
  user_id   text   NOT NULL,
  device_id text   NOT NULL,
  acked_seq bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (user_id, device_id)
);

-- Stored, unacknowledged envelopes: opaque bytes plus routing columns only.
CREATE TABLE envelopes (
  user_id       text   NOT NULL,
  device_id     text   NOT NULL,
  seq           bigint NOT NULL,
  envelope_id   bytea  NOT NULL,
  sender_user   text   NOT NULL,
  sender_device text   NOT NULL,
  stored_at_ms  bigint NOT NULL,
  expires_at_ms bigint NOT NULL,
  payload       bytea  NOT NULL,
  PRIMARY KEY (user_id, device_id, seq)
);
CREATE INDEX envelopes_expiry ON envelopes (expires_at_ms);

-- Idempotency: one row per SEND, keyed by the sender's envelope id, holding the answer
-- that was given (the sequences assigned) and a hash of the content, kept until the
-- envelope's TTL has passed.
CREATE TABLE sent_envelopes (
  sender_user    text     NOT NULL,
  sender_device  text     NOT NULL,
  envelope_id    bytea    NOT NULL,
  content_hash   bytea    NOT NULL,
  recipient_user text     NOT NULL,
  device_ids     text[]   NOT NULL,
  seqs           bigint[] NOT NULL,
  expires_at_ms  bigint   NOT NULL,
  PRIMARY KEY (sender_user, sender_device, envelope_id)
);
CREATE INDEX sent_envelopes_expiry ON sent_envelopes (expires_at_ms);
