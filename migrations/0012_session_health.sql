-- How many worker sessions each process has and how many of them are healthy (able to take
-- work), kept current by its heartbeat, so that a task nobody can run can say so.
ALTER TABLE worker_processes
    ADD COLUMN sessions         INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN healthy_sessions INTEGER NOT NULL DEFAULT 0;
