-- Devices: one row per (user, device). The identity key is the device's Ed25519 public
-- key; every other key the device publishes is signed by it.
CREATE TABLE devices (
  user_id      text        NOT NULL,
  device_id    text        NOT NULL,
  identity_key bytea       NOT NULL CHECK (octet_length(identity_key) = 32),
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, device_id)
);
