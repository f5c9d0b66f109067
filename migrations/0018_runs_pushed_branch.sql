-- What Conveyor last pushed to a branch is looked up by branch name before every push.
CREATE INDEX runs_pushed_branch ON runs (branch, id) WHERE head_sha IS NOT NULL;
