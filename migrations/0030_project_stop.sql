-- A stopped repository is paused with its tasks cancelled: `stopping` while workers still
-- stop its running ones, `stopped` after. Resuming clears it.
ALTER TABLE repositories ADD COLUMN stopped BOOLEAN NOT NULL DEFAULT false;
