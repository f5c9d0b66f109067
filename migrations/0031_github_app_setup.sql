-- The GitHub App created from the manifest at /setup. One row: Conveyor runs as one App.
-- The private key and the secrets are sealed (ChaCha20-Poly1305 with CONVEYOR_SECRET_KEY or
-- the key file under CONVEYOR_DATA_DIR), each bound to its column's name so that one
-- cannot be passed off as another.
CREATE TABLE github_app (
    singleton      BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    app_id         BIGINT NOT NULL,
    slug           TEXT NOT NULL,
    html_url       TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    client_secret  BYTEA NOT NULL,
    webhook_secret BYTEA NOT NULL,
    private_key    BYTEA NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The `state` of each manifest flow started at /setup; the callback consumes its own, once.
CREATE TABLE github_app_setup_states (
    state      TEXT PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
