-- The one status comment of a task, wherever in the task's life it was first posted (while
-- the task waited, or by a run), with the deferral reason it shows while the task waits.
CREATE TABLE status_comments (
    task_id    BIGINT PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
    comment_id BIGINT NOT NULL,
    waiting    TEXT
);

INSERT INTO status_comments (task_id, comment_id)
SELECT DISTINCT ON (task_id) task_id, comment_id
FROM runs
WHERE comment_id IS NOT NULL
ORDER BY task_id, attempt DESC;

ALTER TABLE runs DROP COLUMN comment_id;
