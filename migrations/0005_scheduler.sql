-- Per-repository scheduling: how many tasks of a repository may run at once, and how many
-- do. The counter lives on the row claims lock, so concurrent claimers in any number of
-- processes see each other's claims (Postgres re-checks a locked row's latest version).
CREATE TABLE repositories (
    owner       TEXT NOT NULL,
    name        TEXT NOT NULL,
    max_running INTEGER NOT NULL DEFAULT 1 CHECK (max_running > 0),
    running     INTEGER NOT NULL DEFAULT 0 CHECK (running >= 0),
    PRIMARY KEY (owner, name)
);

INSERT INTO repositories (owner, name, running)
SELECT repo_owner, repo_name, count(*) FILTER (WHERE state = 'running')
FROM tasks
GROUP BY repo_owner, repo_name;

-- Processes running worker sessions, with their heartbeats. A process silent for too long
-- is declared dead and its running tasks are rescued.
CREATE TABLE worker_processes (
    id           TEXT PRIMARY KEY,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

ALTER TABLE tasks
    ADD COLUMN process_id   TEXT,
    ADD COLUMN attempts     INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts > 0);

CREATE INDEX tasks_running_by_process ON tasks (process_id) WHERE state = 'running';
