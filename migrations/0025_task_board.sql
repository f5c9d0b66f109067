-- The board: every task's lifecycle as people see it (seed 001), kept beside the queue state
-- the scheduler works with. `held` is the queue state of a task on the board but not in the
-- queue (backlog, or blocked by hand); nothing below names it, since a new enum value cannot
-- be used in the transaction that adds it.
ALTER TYPE task_state ADD VALUE IF NOT EXISTS 'held';

CREATE TYPE board_state AS ENUM
    ('backlog', 'ready', 'in_progress', 'in_review', 'blocked', 'done', 'cancelled');

ALTER TABLE tasks
    ADD COLUMN board_state board_state NOT NULL DEFAULT 'ready',
    ADD COLUMN source TEXT NOT NULL DEFAULT 'github'
        CHECK (source IN ('manual', 'prd_import', 'generated', 'promoted_quick_action', 'github')),
    ADD COLUMN task_type TEXT NOT NULL DEFAULT 'task',
    ADD COLUMN labels TEXT[] NOT NULL DEFAULT '{}',
    ADD COLUMN assignee TEXT,
    ADD COLUMN acceptance_criteria TEXT[] NOT NULL DEFAULT '{}',
    ADD COLUMN context_files TEXT[] NOT NULL DEFAULT '{}',
    ADD COLUMN parent_id BIGINT REFERENCES tasks (id) ON DELETE SET NULL,
    -- Why a task was moved to `blocked` or back by hand, as given.
    ADD COLUMN board_reason TEXT,
    -- A task made through the API has no issue: its runs report through their check runs
    -- and pull request only.
    ALTER COLUMN issue_number DROP NOT NULL;

UPDATE tasks SET board_state = CASE
    WHEN state IN ('running', 'scheduled', 'awaiting_approval', 'awaiting_input')
        THEN 'in_progress'
    WHEN state = 'succeeded' AND (pull_request IS NOT NULL OR EXISTS (
             SELECT 1 FROM runs WHERE runs.task_id = tasks.id
                                  AND (runs.pull_request_number IS NOT NULL
                                       OR runs.branch IS NOT NULL)))
        THEN 'in_review'
    WHEN state = 'succeeded' THEN 'done'
    WHEN state = 'failed' THEN 'blocked'
    WHEN state = 'cancelled' THEN 'cancelled'
    ELSE 'ready' END::board_state;

-- The board's columns and filters, newest first within a column.
CREATE INDEX tasks_by_board_state ON tasks (board_state, id DESC);
CREATE INDEX tasks_by_parent ON tasks (parent_id) WHERE parent_id IS NOT NULL;
-- Merging a pull request finds the tasks it completes.
CREATE INDEX runs_by_pull_request ON runs (pull_request_number)
    WHERE pull_request_number IS NOT NULL;
