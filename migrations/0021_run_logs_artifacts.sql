-- Each step's output as timestamped lines, written while the step runs, so a client can
-- follow a run. `seq` orders lines across a run's steps, attempts and passes; one worker
-- writes a run at a time, so a follower reading `seq > last seen` misses nothing.
CREATE TABLE run_logs (
    seq      BIGSERIAL PRIMARY KEY,
    run_id   BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    -- The step's position and name: its lines are shown before its result is recorded.
    position INTEGER NOT NULL,
    step     TEXT NOT NULL,
    attempt  INTEGER NOT NULL,
    ts       TIMESTAMPTZ NOT NULL,
    line     TEXT NOT NULL
);

CREATE INDEX run_logs_by_run ON run_logs (run_id, seq);

-- What a run changed against its base, stored when it parks at a gate or publishes (and,
-- for a failed run, what its work tree held): the diff (bounded; `diff_bytes` is its full
-- size, `truncated` whether `diff` was cut) and the files with their line counts.
CREATE TABLE run_artifacts (
    run_id     BIGINT PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    base_sha   TEXT NOT NULL,
    head_sha   TEXT NOT NULL,
    diff       TEXT NOT NULL,
    diff_bytes BIGINT NOT NULL,
    truncated  BOOLEAN NOT NULL,
    files      JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- How many times a step ran before its recorded result (retries).
ALTER TABLE run_steps ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1;

ALTER TABLE runs
    -- Why a run that did not succeed ended, from one closed set, for querying; the hint
    -- and the steps around the failure go with it.
    ADD COLUMN error_type TEXT,
    ADD COLUMN failed_step TEXT,
    ADD COLUMN last_successful_step TEXT,
    ADD COLUMN remediation TEXT,
    -- Time the run's steps took so far, over every pass: a run resumed after an approval
    -- goes on counting against its budget from here.
    ADD COLUMN time_used_ms BIGINT NOT NULL DEFAULT 0;

CREATE INDEX runs_error_type ON runs (error_type) WHERE error_type IS NOT NULL;
