-- How often the missed-delivery sweep asked GitHub to redeliver each delivery: a delivery
-- that keeps failing is asked for a bounded number of times in all, whichever process sweeps.
CREATE TABLE redelivery_requests (
    guid              TEXT PRIMARY KEY,
    requests          INTEGER NOT NULL,
    last_requested_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
