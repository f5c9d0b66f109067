-- A run goes by one pipeline definition from its first attempt to its last: the commit its
-- file was read at and a hash of the text, so a later run can say when the file changed.
ALTER TABLE runs
    ADD COLUMN definition_sha TEXT,
    ADD COLUMN definition_hash TEXT;

-- A budget for the whole run lower than the pipeline's, asked for with
-- `/conveyor run NAME timeout=30m`.
ALTER TABLE tasks ADD COLUMN timeout_minutes INTEGER;
