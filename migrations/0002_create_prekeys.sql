-- Signed prekeys: at most one current key of each kind per device, replaced on rotation.
-- kind 1 = signed X25519 prekey, kind 2 = signed ML-KEM-768 last-resort prekey.
CREATE TABLE signed_prekeys (
  user_id    text        NOT NULL,
  device_id  text        NOT NULL,
  kind       smallint    NOT NULL CHECK (kind IN (1, 2)),
  key_id     bigint      NOT NULL CHECK (key_id BETWEEN 0 AND 4294967295),
  public_key bytea       NOT NULL,
  signature  bytea       NOT NULL CHECK (octet_length(signature) = 64),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, device_id, kind),
  FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

-- One-time prekeys, each handed out at most once: a bundle fetch deletes the row it
-- returns. kind 1 = one-time X25519 prekey, kind 2 = one-time ML-KEM-768 prekey.
CREATE TABLE one_time_prekeys (
  user_id    text        NOT NULL,
  device_id  text        NOT NULL,
  kind       smallint    NOT NULL CHECK (kind IN (1, 2)),
  key_id     bigint      NOT NULL CHECK (key_id BETWEEN 0 AND 4294967295),
  public_key bytea       NOT NULL,
  signature  bytea       NOT NULL CHECK (octet_length(signature) = 64),
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, device_id, kind, key_id),
  FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
