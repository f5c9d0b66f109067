-- The event feed: the audit trail of tasks and runs, read by clients in commit order.
--
-- Event ids come from a sequence, so they are handed out before their transactions commit,
-- and commits come in any order: a reader that moved past id 102 could miss 101 committed
-- after it. Each event keeps the transaction that wrote it, and the feed serves only events
-- of transactions older than every transaction of this database still running (which could
-- still write some), ordered by (tx, id): that order never gains an event behind a reader.
ALTER TABLE task_events ADD COLUMN tx xid8 NOT NULL DEFAULT pg_current_xact_id();

CREATE INDEX task_events_feed ON task_events (tx, id);

-- The delivery (`X-GitHub-Delivery`) or API request that started a task's chain of events.
ALTER TABLE tasks ADD COLUMN correlation_id TEXT;

UPDATE tasks SET correlation_id = d.delivery_id
FROM deliveries d WHERE d.id = tasks.delivery_id;

-- Followers of the feed are woken once per transaction that added events, at its commit.
CREATE FUNCTION announce_task_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('conveyor_events', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER task_events_announced AFTER INSERT ON task_events
    FOR EACH STATEMENT EXECUTE FUNCTION announce_task_events();

-- Every change of a run's state is in the trail, with the step it waits at or failed at, whichever
-- statement made it: the scheduler's bulk endings, approvals, clarification, the worker.
CREATE FUNCTION record_run_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_events (task_id, run_id, kind, detail)
    VALUES (NEW.task_id, NEW.id, 'run',
            jsonb_strip_nulls(jsonb_build_object(
                'from', CASE WHEN TG_OP = 'UPDATE' THEN OLD.state::text END,
                'to', NEW.state::text,
                'attempt', NEW.attempt,
                'waiting_step', NEW.waiting_step,
                'failed_step', NEW.failed_step,
                'error_type', NEW.error_type)));
    RETURN NULL;
END;
$$;

CREATE TRIGGER runs_state_recorded AFTER INSERT ON runs
    FOR EACH ROW EXECUTE FUNCTION record_run_state();

CREATE TRIGGER runs_state_changed AFTER UPDATE OF state ON runs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION record_run_state();
