-- Deliveries: every signed webhook, stored raw before anything interprets it.
CREATE TABLE deliveries (
    id              BIGSERIAL PRIMARY KEY,
    delivery_id     TEXT NOT NULL UNIQUE,
    event           TEXT NOT NULL,
    payload         BYTEA NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Filled by interpretation.
    action          TEXT,
    installation_id BIGINT,
    repository      TEXT,
    outcome         TEXT,
    processed_at    TIMESTAMPTZ
);

CREATE INDEX deliveries_pending ON deliveries (id) WHERE processed_at IS NULL;

CREATE TYPE task_state AS ENUM ('queued', 'running', 'succeeded', 'failed', 'cancelled');

CREATE TABLE tasks (
    id              BIGSERIAL PRIMARY KEY,
    installation_id BIGINT NOT NULL,
    repo_owner      TEXT NOT NULL,
    repo_name       TEXT NOT NULL,
    default_branch  TEXT NOT NULL,
    issue_number    BIGINT NOT NULL,
    title           TEXT NOT NULL,
    body            TEXT NOT NULL DEFAULT '',
    pipeline        TEXT NOT NULL DEFAULT 'default',
    state           task_state NOT NULL DEFAULT 'queued',
    priority        INTEGER NOT NULL DEFAULT 0,
    -- The delivery that created the task: a redelivery can never create a second one.
    delivery_id     BIGINT UNIQUE REFERENCES deliveries (id),
    -- Bumped on every claim; a result carrying an older epoch is stale.
    lease_epoch     BIGINT NOT NULL DEFAULT 0,
    claimed_by      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- At most one live task per issue: labelling again while one runs does not queue a twin.
CREATE UNIQUE INDEX tasks_one_live_per_issue
    ON tasks (repo_owner, repo_name, issue_number)
    WHERE state IN ('queued', 'running');

CREATE INDEX tasks_ready ON tasks (priority DESC, created_at, id) WHERE state = 'queued';

CREATE TYPE run_state AS ENUM ('running', 'succeeded', 'failed');

CREATE TABLE runs (
    id                  BIGSERIAL PRIMARY KEY,
    task_id             BIGINT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt             INTEGER NOT NULL,
    state               run_state NOT NULL DEFAULT 'running',
    pipeline            TEXT NOT NULL,
    started_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at         TIMESTAMPTZ,
    comment_id          BIGINT,
    branch              TEXT,
    head_sha            TEXT,
    pull_request_number BIGINT,
    pull_request_url    TEXT,
    check_run_id        BIGINT,
    failure             TEXT,
    UNIQUE (task_id, attempt)
);

CREATE TABLE run_steps (
    run_id      BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    name        TEXT NOT NULL,
    command     TEXT NOT NULL,
    exit_code   INTEGER,
    duration_ms BIGINT NOT NULL,
    output      TEXT NOT NULL,
    PRIMARY KEY (run_id, position)
);

-- The audit trail: every state change of a task, with who or what caused it.
CREATE TABLE task_events (
    id         BIGSERIAL PRIMARY KEY,
    task_id    BIGINT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    run_id     BIGINT REFERENCES runs (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    detail     JSONB NOT NULL DEFAULT '{}',
    at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX task_events_by_task ON task_events (task_id, id);
