-- `Idempotency-Key` on the API's POSTs: the key's hash, the hash of the request it came
-- with, and what that request made, kept 6 hours.
CREATE TABLE idempotency_keys (
    key_hash     BYTEA PRIMARY KEY,
    request_hash BYTEA NOT NULL,
    -- Set once the first request succeeded; until then it is in flight.
    status       SMALLINT,
    location     TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
