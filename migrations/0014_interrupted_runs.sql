-- A run that ended without a result from its worker: cancelled, or interrupted because its
-- process died or shut down, or its session crashed.
ALTER TYPE run_state ADD VALUE 'cancelled';
ALTER TYPE run_state ADD VALUE 'interrupted';
