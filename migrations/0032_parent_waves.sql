-- Parent tasks (seed 002): a task with children runs nothing itself; its children run in
-- waves of at most `max_parallelism` at once (no limit when NULL), and `failure_policy`
-- says what a failed child does to the rest.
ALTER TABLE tasks
    ADD COLUMN max_parallelism INTEGER CHECK (max_parallelism > 0),
    ADD COLUMN failure_policy TEXT NOT NULL DEFAULT 'stop'
        CHECK (failure_policy IN ('stop', 'continue', 'retry')),
    -- Set by an audited force-run: the claim takes the task although blockers are unresolved.
    ADD COLUMN forced BOOLEAN NOT NULL DEFAULT false;

-- The claim counts a parent's running children per candidate: an index probe, not a scan.
CREATE INDEX tasks_running_children ON tasks (parent_id)
    WHERE parent_id IS NOT NULL AND state = 'running';
