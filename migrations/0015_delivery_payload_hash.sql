-- The signature does not cover X-GitHub-Delivery: the same signed body under another delivery
-- id is a duplicate, not a new delivery. The hash is of the payload bytes as GitHub sent them,
-- not of the stored (compressed) value. Deliveries stored before this migration have none.
ALTER TABLE deliveries ADD COLUMN payload_sha256 BYTEA;

CREATE UNIQUE INDEX deliveries_payload_sha256 ON deliveries (event, payload_sha256)
    WHERE payload_sha256 IS NOT NULL;
