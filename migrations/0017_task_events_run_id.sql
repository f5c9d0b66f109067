-- Deleting a run (with its task, by housekeeping) looks up the audit trail by run_id through
-- the foreign key: without an index that is a scan of the whole trail per run. Most events
-- belong to no run, so the index leaves them out.
CREATE INDEX task_events_by_run ON task_events (run_id) WHERE run_id IS NOT NULL;

-- (Also here, as the one migration number this change had.) A waiting report being written
-- to a task's status comment, by `writer`, since `started_at`. The report is written outside
-- any transaction; a run that starts meanwhile waits for it to land before it writes the
-- comment, so the run's text is never overwritten by a late "waiting" and both use one
-- comment. A mark older than the writer's time limit counts as abandoned.
CREATE TABLE waiting_report_writes (
    task_id    BIGINT PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
    writer     UUID NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
