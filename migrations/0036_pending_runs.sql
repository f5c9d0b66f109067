-- A run is `pending` from its claim until its workspace and pipeline file are ready and its
-- first step may start (seed 003). Its own migration: Postgres lets a new enum value be used
-- only once the transaction that added it has committed.
ALTER TYPE run_state ADD VALUE IF NOT EXISTS 'pending' BEFORE 'running';
