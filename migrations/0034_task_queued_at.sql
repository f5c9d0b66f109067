-- When each queued task became claimable: when it entered `queued`, or later when the last
-- task blocking it finished. The claim returns it, so the queue wait (seed 004 §8.3) is
-- measured without another query. Kept by triggers because a task is queued, requeued and
-- released by many statements, and none of them may forget it.
ALTER TABLE tasks ADD COLUMN queued_at TIMESTAMPTZ;
UPDATE tasks SET queued_at = updated_at WHERE state = 'queued';

CREATE FUNCTION tasks_mark_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state = 'queued' AND (TG_OP = 'INSERT' OR OLD.state <> 'queued') THEN
        NEW.queued_at := now();
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER tasks_queued_at BEFORE INSERT OR UPDATE OF state ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_mark_queued();

CREATE FUNCTION tasks_release_blocked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tasks t SET queued_at = now()
    FROM task_blockers d
    WHERE d.blocker_id = NEW.id AND t.id = d.task_id AND t.state = 'queued'
      AND NOT EXISTS (SELECT 1 FROM task_blockers o JOIN tasks b ON b.id = o.blocker_id
                      WHERE o.task_id = t.id AND b.id <> NEW.id
                        AND b.board_state NOT IN ('done', 'cancelled'));
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_blocker_resolved AFTER UPDATE OF board_state ON tasks
    FOR EACH ROW
    WHEN (NEW.board_state IN ('done', 'cancelled')
          AND OLD.board_state NOT IN ('done', 'cancelled'))
    EXECUTE FUNCTION tasks_release_blocked();
