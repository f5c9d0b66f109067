-- Quick runs: a prompt run once through a repository's pipeline. Underneath each is a task
-- of source `quick_run`, which the board leaves out until it is promoted (its source then
-- becomes `promoted_quick_action`).
ALTER TABLE tasks DROP CONSTRAINT tasks_source_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_source_check CHECK (source IN
    ('manual', 'prd_import', 'generated', 'promoted_quick_action', 'github', 'quick_run'));

CREATE TABLE quick_runs (
    id BIGSERIAL PRIMARY KEY,
    task_id BIGINT NOT NULL UNIQUE REFERENCES tasks (id) ON DELETE CASCADE,
    prompt TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_by TEXT NOT NULL,
    promoted_at TIMESTAMPTZ
);
