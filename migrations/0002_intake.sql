-- Retention drops payloads but keeps the record and outcome of every delivery.
ALTER TABLE deliveries ALTER COLUMN payload DROP NOT NULL;

-- Interpretation failures are retried with backoff before a delivery is left failed.
ALTER TABLE deliveries
    ADD COLUMN attempts        INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now();

DROP INDEX deliveries_pending;
CREATE INDEX deliveries_pending ON deliveries (next_attempt_at, id) WHERE processed_at IS NULL;
CREATE INDEX deliveries_by_outcome ON deliveries (outcome, id);
CREATE INDEX deliveries_with_payload ON deliveries (received_at) WHERE payload IS NOT NULL;

CREATE TABLE installations (
    id           BIGINT PRIMARY KEY,
    account      TEXT NOT NULL,
    suspended_at TIMESTAMPTZ,
    deleted_at   TIMESTAMPTZ,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE installation_repositories (
    installation_id BIGINT NOT NULL REFERENCES installations (id) ON DELETE CASCADE,
    repository_id   BIGINT NOT NULL,
    full_name       TEXT NOT NULL,
    PRIMARY KEY (installation_id, repository_id)
);
