-- A failed task with attempts left waits in `scheduled` until `run_after`, then is queued.
ALTER TYPE task_state ADD VALUE IF NOT EXISTS 'scheduled';
ALTER TABLE tasks ADD COLUMN run_after TIMESTAMPTZ;
