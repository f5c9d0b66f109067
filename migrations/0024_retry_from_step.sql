-- What a failed run's steps left in the work tree, as a binary patch against the run's base
-- commit: `/conveyor retry STEP` starts a new run at that step on top of it, on any worker.
CREATE TABLE run_work (
    run_id BIGINT PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    patch  BYTEA NOT NULL
);

-- A task started by `/conveyor retry STEP`: the run whose work and pipeline definition it
-- takes up, and the position of the step it starts at.
ALTER TABLE tasks
    ADD COLUMN retry_from_run BIGINT REFERENCES runs (id) ON DELETE SET NULL,
    ADD COLUMN retry_from_step INTEGER;

-- An issue's tasks, newest first: `/conveyor retry` and `status` look them up, and a new
-- run's report compares its pipeline file with the issue's earlier runs'.
CREATE INDEX tasks_by_issue ON tasks (repo_owner, repo_name, issue_number, id);
