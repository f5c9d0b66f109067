-- A running task asked to stop: its worker sees the flag, kills the step and ends the task.
ALTER TABLE tasks ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT false;
