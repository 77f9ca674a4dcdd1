-- Key freshness (docs/SECURITY.md "Key freshness"): the highest key id each device ever
-- published of each kind. An upload whose id is at or below it is refused
-- (KEY_ID_REUSED) unless it is the very key still stored (a retried request), so an old
-- signed prekey, last-resort key or consumed one-time key cannot be presented again with
-- its old, valid signature. kind 1 = signed X25519 prekey, 2 = last-resort ML-KEM-768
-- prekey, 3 = one-time X25519 prekey, 4 = one-time ML-KEM-768 prekey.
CREATE TABLE prekey_id_high_water (
  user_id    text     NOT NULL,
  device_id  text     NOT NULL,
  kind       smallint NOT NULL CHECK (kind IN (1, 2, 3, 4)),
  max_key_id bigint   NOT NULL CHECK (max_key_id BETWEEN 0 AND 4294967295),
  PRIMARY KEY (user_id, device_id, kind),
  FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

-- What is stored today is the best record there is of what was used.
INSERT INTO prekey_id_high_water (user_id, device_id, kind, max_key_id)
  SELECT user_id, device_id, kind, max(key_id) FROM signed_prekeys GROUP BY user_id, device_id, kind;
INSERT INTO prekey_id_high_water (user_id, device_id, kind, max_key_id)
  SELECT user_id, device_id, kind + 2, max(key_id) FROM one_time_prekeys GROUP BY user_id, device_id, kind;

-- One-time prekey hand-outs per TARGET device, shared by every relay on this database
-- (docs/SECURITY.md "One-time prekey budget"): a token bucket, `tokens` as of `at_ms`
-- (the relay's clock, milliseconds), refilled continuously up to the configured burst.
-- A bundle fetch takes a token in the same transaction that takes the one-time keys;
-- without one the bundle is served without one-time keys.
CREATE TABLE one_time_prekey_budget (
  user_id   text             NOT NULL,
  device_id text             NOT NULL,
  tokens    double precision NOT NULL,
  at_ms     bigint           NOT NULL,
  PRIMARY KEY (user_id, device_id),
  FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
