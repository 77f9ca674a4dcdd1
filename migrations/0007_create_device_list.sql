-- The signed device list (crypto/devices, docs/PROTOCOL.md "Device list"): every root,
-- add and revoke entry of each user, in order. The relay checks each entry against the
-- list before storing it; `devices` stays the set of active devices (what connections
-- authenticate against and what SENDs must target), kept in step in the same
-- transaction. The encoded entry is stored as received: clients verify the chain
-- themselves from these bytes.
CREATE TABLE device_list_entries (
  user_id      text     NOT NULL,
  seq          integer  NOT NULL CHECK (seq >= 0),
  kind         smallint NOT NULL CHECK (kind IN (1, 2, 3)),
  device_id    text     NOT NULL,
  identity_key bytea    NOT NULL CHECK (octet_length(identity_key) = 32),
  entry        bytea    NOT NULL,
  entry_hash   bytea    NOT NULL CHECK (octet_length(entry_hash) = 32),
  PRIMARY KEY (user_id, seq)
);

-- The entry that added each device. NULL for a device registered before the signed
-- list existed: such a device can still connect, and it becomes the root of its user's
-- list by posting a root entry (which retires the user's other unlisted devices; they
-- are linked again from the root).
ALTER TABLE devices ADD COLUMN linked_seq integer;
