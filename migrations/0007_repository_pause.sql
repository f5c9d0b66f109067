-- A paused repository's queued tasks are not claimed; running ones finish.
ALTER TABLE repositories ADD COLUMN paused BOOLEAN NOT NULL DEFAULT false;
