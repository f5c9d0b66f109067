-- A successful run is `completed`, as seed 003 names it.
ALTER TYPE run_state RENAME VALUE 'succeeded' TO 'completed';

-- Which run state may follow which, as `RunState::next` has it (a test holds the two equal):
-- Postgres refuses any other change, whichever statement tries it, and the run keeps its state.
CREATE TABLE run_transitions (
    from_state run_state NOT NULL,
    to_state   run_state NOT NULL,
    PRIMARY KEY (from_state, to_state)
);

INSERT INTO run_transitions (from_state, to_state) VALUES
    ('running', 'completed'),
    ('running', 'failed'),
    ('running', 'cancelled'),
    ('running', 'interrupted'),
    ('running', 'awaiting_approval'),
    ('running', 'awaiting_input'),
    ('awaiting_approval', 'running'),
    ('awaiting_approval', 'failed'),
    ('awaiting_approval', 'cancelled'),
    ('awaiting_input', 'running'),
    ('awaiting_input', 'failed'),
    ('awaiting_input', 'cancelled');

CREATE FUNCTION refuse_invalid_run_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM run_transitions
                   WHERE from_state = OLD.state AND to_state = NEW.state) THEN
        RAISE EXCEPTION 'invalid run transition from % to %', OLD.state, NEW.state
            USING ERRCODE = 'check_violation', TABLE = 'runs', COLUMN = 'state';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER runs_transition_checked BEFORE UPDATE OF state ON runs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION refuse_invalid_run_transition();
