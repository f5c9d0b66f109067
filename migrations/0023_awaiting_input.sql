-- A run stopped at a step that asked its requester questions (exit code 75), and its task:
-- neither holds a worker or a repository slot until the answer comes. The new enum values
-- cannot be used in the transaction that adds them, so nothing below names them.
ALTER TYPE task_state ADD VALUE IF NOT EXISTS 'awaiting_input';
ALTER TYPE run_state ADD VALUE IF NOT EXISTS 'awaiting_input';

-- A task waiting for an answer is live: labelling its issue again must not queue a twin.
-- Written as "not finished" so that it holds for every waiting state.
DROP INDEX tasks_one_live_per_issue;
CREATE UNIQUE INDEX tasks_one_live_per_issue
    ON tasks (repo_owner, repo_name, issue_number)
    WHERE state NOT IN ('succeeded', 'failed', 'cancelled');

ALTER TABLE runs
    -- The questions of the latest round (markdown, bounded) and when they were asked;
    -- set while the run waits for the answer, and kept for its reports afterwards.
    ADD COLUMN questions TEXT,
    ADD COLUMN questions_asked_at TIMESTAMPTZ,
    -- How long the run waits for an answer, from its pinned pipeline.
    ADD COLUMN answer_timeout_hours INTEGER,
    -- Rounds of questions asked so far.
    ADD COLUMN clarification_rounds INTEGER NOT NULL DEFAULT 0,
    -- Every answer the requester gave, oldest first: the step that asked finds the latest
    -- in `CONVEYOR_ANSWERS_FILE`.
    ADD COLUMN answers TEXT[] NOT NULL DEFAULT '{}';

-- The housekeeping pass finds the runs whose questions went unanswered too long.
CREATE INDEX runs_questions_asked ON runs (questions_asked_at)
    WHERE questions_asked_at IS NOT NULL AND finished_at IS NULL;
