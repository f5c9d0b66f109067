-- The claim counts a parent's running children through this function so that the count is
-- read after the claim has locked their repository's row: a VOLATILE function takes a
-- snapshot of its own for each query it runs, and so sees every claim that committed before
-- the lock was granted. The claim statement's own snapshot, taken when it began, can miss a
-- claim that committed meanwhile in another process, and the parent would run one child too
-- many.
CREATE FUNCTION running_children(parent BIGINT) RETURNS BIGINT
    LANGUAGE sql VOLATILE
    AS $$ SELECT count(*) FROM tasks WHERE parent_id = parent AND state = 'running' $$;
