-- New runs start `pending`; `RunState::next` has the same table (a test holds the two equal).
ALTER TABLE runs ALTER COLUMN state SET DEFAULT 'pending';

INSERT INTO run_transitions (from_state, to_state) VALUES
    ('pending', 'running'),
    ('pending', 'failed'),
    ('pending', 'cancelled'),
    ('pending', 'interrupted');
