-- A committed PRD import: which tasks one markdown task list became, so that the import can
-- be looked at (and its keys traced to tasks) after the fact.
CREATE TABLE import_jobs (
    id BIGSERIAL PRIMARY KEY,
    -- `owner/name`, as the installation spells it.
    repository TEXT NOT NULL,
    granularity TEXT NOT NULL CHECK (granularity IN ('task', 'subtask')),
    -- In the plan's key order.
    task_ids BIGINT[] NOT NULL,
    -- Each key of the task list → the id of the task it became.
    task_keys JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_by TEXT NOT NULL
);
