-- A run parked at an approval step, and its task: neither holds a worker or a repository
-- slot while a person decides. Added alone: a new enum value cannot be used in the
-- transaction that adds it.
ALTER TYPE task_state ADD VALUE IF NOT EXISTS 'awaiting_approval';
ALTER TYPE run_state ADD VALUE IF NOT EXISTS 'awaiting_approval';
