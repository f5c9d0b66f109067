-- A task waiting to be retried is still live: labelling its issue again must not queue a twin.
DROP INDEX tasks_one_live_per_issue;
CREATE UNIQUE INDEX tasks_one_live_per_issue
    ON tasks (repo_owner, repo_name, issue_number)
    WHERE state IN ('queued', 'running', 'scheduled');
CREATE INDEX tasks_due ON tasks (run_after) WHERE state = 'scheduled';
