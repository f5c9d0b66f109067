-- A replayed delivery is now recognised by its body's verified HMAC-SHA256 (the signature
-- the request was checked with) instead of a SHA-256 of its own: equal signed bodies have
-- equal keys, and the second pass over every payload cost about 7 % of intake's CPU. Keys
-- stored before this migration are plain SHA-256 digests of the payload; they stay.
ALTER TABLE deliveries RENAME COLUMN payload_sha256 TO replay_key;
ALTER INDEX deliveries_payload_sha256 RENAME TO deliveries_replay_key;
