-- The receipt transparency log (docs/PROTOCOL.md "Receipt log"): an append-only RFC 6962
-- Merkle tree whose leaves are delivery receipts (compact JWS signed by the recipient
-- device). Appends are serialized by the row lock on log_tree, so any number of relays
-- sharing the database extend one tree.

-- One row per leaf. leaf_hash is unique: a receipt submitted twice keeps its index.
CREATE TABLE log_leaves (
  leaf_index       bigint PRIMARY KEY CHECK (leaf_index >= 0),
  leaf_hash        bytea  NOT NULL UNIQUE CHECK (octet_length(leaf_hash) = 32),
  receipt          text   NOT NULL,
  submitted_at_ms  bigint NOT NULL,
  recipient_user   text   NOT NULL,
  recipient_device text   NOT NULL
);

-- The users a receipt concerns (its recipient user and every sender user), so that each
-- can list the receipts about it in index order.
CREATE TABLE log_parties (
  user_id    text   NOT NULL,
  leaf_index bigint NOT NULL REFERENCES log_leaves (leaf_index),
  PRIMARY KEY (user_id, leaf_index)
);

-- Every complete subtree hash, addressed by (level, index): node (l, i) covers leaves
-- [i * 2^l, (i + 1) * 2^l). Level 0 holds the leaf hashes. About two rows per leaf.
CREATE TABLE log_nodes (
  level smallint NOT NULL CHECK (level >= 0 AND level < 64),
  idx   bigint   NOT NULL CHECK (idx >= 0),
  hash  bytea    NOT NULL CHECK (octet_length(hash) = 32),
  PRIMARY KEY (level, idx)
);

-- The tree head: a single row, locked by every append.
CREATE TABLE log_tree (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  size      bigint  NOT NULL CHECK (size >= 0),
  root      bytea   NOT NULL CHECK (octet_length(root) = 32)
);
-- The empty tree's root is SHA-256 of the empty string (RFC 6962 §2.1).
INSERT INTO log_tree (singleton, size, root) VALUES (true, 0, sha256(''::bytea));

-- Every signed checkpoint, kept as history: at most one per tree size and log key
-- (verifier key string), so that after a key rotation the current tree head is signed
-- again by the new key.
CREATE TABLE log_checkpoints (
  size         bigint NOT NULL CHECK (size >= 0),
  verifier_key text   NOT NULL,
  root         bytea  NOT NULL CHECK (octet_length(root) = 32),
  note         text   NOT NULL,
  signed_at_ms bigint NOT NULL,
  PRIMARY KEY (size, verifier_key)
);
