-- A task parked at an approval is live: labelling its issue again must not queue a twin.
DROP INDEX tasks_one_live_per_issue;
CREATE UNIQUE INDEX tasks_one_live_per_issue
    ON tasks (repo_owner, repo_name, issue_number)
    WHERE state IN ('queued', 'running', 'scheduled', 'awaiting_approval');

ALTER TABLE tasks
    -- Who started the task (the labeller, the commenter): approvals by them are refused
    -- unless the repository allows self-approval.
    ADD COLUMN requested_by TEXT,
    -- Set for a task run on a pull request's own branch (`/conveyor run` on a PR): the run
    -- pushes new commits to `head_branch` instead of a branch and pull request of its own.
    ADD COLUMN pull_request BIGINT,
    ADD COLUMN head_branch TEXT,
    -- The pull request's head when the run was asked for: its check run shows `queued`
    -- there at once.
    ADD COLUMN head_sha TEXT,
    -- The task this one retries (`/conveyor retry`, a re-requested check run).
    ADD COLUMN retry_of BIGINT REFERENCES tasks (id) ON DELETE SET NULL,
    -- Who cancelled the task, for its reports.
    ADD COLUMN cancelled_by TEXT;

ALTER TABLE runs
    -- How the run ended, in the report's terms: what the status comment and check run show.
    ADD COLUMN outcome JSONB,
    -- The pipeline file the run started with: a run resumed after an approval goes on with
    -- the definition that was approved, whatever the default branch holds by then.
    ADD COLUMN definition TEXT,
    -- The approval step the run waits at (its position), and the next step to run once
    -- approved; the commit the approval is bound to is `head_sha`.
    ADD COLUMN waiting_step INTEGER,
    ADD COLUMN resume_at_step INTEGER,
    -- The run a retry follows.
    ADD COLUMN previous_run_id BIGINT REFERENCES runs (id) ON DELETE SET NULL,
    -- The commit the run reports on now (a pull request's head for PR runs, else the commit
    -- it pushed); its check run on an earlier commit shows how that one ended.
    ADD COLUMN check_sha TEXT,
    -- The commit the run's work started from: what its diff is taken against.
    ADD COLUMN base_sha TEXT;

-- The `conveyor` check runs of a task, one per commit it reported on; the GitHub id is
-- known once the outbox created it.
CREATE TABLE check_runs (
    task_id      BIGINT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    head_sha     TEXT NOT NULL,
    check_run_id BIGINT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, head_sha)
);

CREATE INDEX runs_awaiting_approval ON runs (id) WHERE state = 'awaiting_approval';

-- What people asked of Conveyor on GitHub (labels, comment commands, check-run buttons,
-- closes), queued by interpretation and applied by one worker that may call GitHub
-- (repository settings, permissions) outside interpretation's transaction.
CREATE TABLE requests (
    id              BIGSERIAL PRIMARY KEY,
    delivery_id     BIGINT REFERENCES deliveries (id) ON DELETE SET NULL,
    -- Several commands of one comment, in order.
    position        INTEGER NOT NULL DEFAULT 0,
    installation_id BIGINT NOT NULL,
    repo_owner      TEXT NOT NULL,
    repo_name       TEXT NOT NULL,
    default_branch  TEXT NOT NULL,
    -- Unknown for a check-run button or a re-run: found from the check run's task.
    issue_number    BIGINT,
    actor           TEXT NOT NULL,
    actor_is_bot    BOOLEAN NOT NULL DEFAULT false,
    request         JSONB NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    processed_at    TIMESTAMPTZ,
    outcome         TEXT,
    UNIQUE (delivery_id, position)
);

CREATE INDEX requests_pending ON requests (next_attempt_at, id) WHERE processed_at IS NULL;

-- Every effect on GitHub, written in the transaction of the change that causes it and
-- delivered by a worker: in order within a lane, an effect superseded by a later one of the
-- same target skipped, retried until GitHub takes it.
CREATE TABLE outbox (
    id              BIGSERIAL PRIMARY KEY,
    installation_id BIGINT NOT NULL,
    repo_owner      TEXT NOT NULL,
    repo_name       TEXT NOT NULL,
    lane            TEXT NOT NULL,
    target          TEXT NOT NULL,
    effect          JSONB NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    locked_until    TIMESTAMPTZ,
    delivered_at    TIMESTAMPTZ,
    outcome         TEXT,
    last_error      TEXT
);

CREATE INDEX outbox_pending ON outbox (lane, id) WHERE delivered_at IS NULL;

-- The status comment is written only by the outbox now; the marks that kept a waiting
-- report and a run from writing it at once are gone with the two writers.
DROP TABLE waiting_report_writes;

-- The waiting report now records the reason it shows before the outbox posts the comment.
ALTER TABLE status_comments ALTER COLUMN comment_id DROP NOT NULL;

ALTER TABLE runs
    -- The approval a parked run waits for: the step, its message, who may approve, what
    -- the run changed. What the check run and the status comment show while it waits.
    ADD COLUMN approval JSONB;

-- Reports are rendered from the records; a timed-out step must say so.
ALTER TABLE run_steps ADD COLUMN timed_out BOOLEAN NOT NULL DEFAULT false;
