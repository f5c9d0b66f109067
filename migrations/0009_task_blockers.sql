-- A task is not claimed until each of its blockers has succeeded or been cancelled.
CREATE TABLE task_blockers (
    task_id    BIGINT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    blocker_id BIGINT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    PRIMARY KEY (task_id, blocker_id),
    CHECK (task_id <> blocker_id)
);

CREATE INDEX task_blockers_by_blocker ON task_blockers (blocker_id);
