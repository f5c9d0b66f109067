-- Webhook payloads are JSON: lz4 compresses them several times faster than the default
-- pglz, which is most of the cost of storing a delivery. A server built without lz4 keeps pglz.
DO $$
BEGIN
    ALTER TABLE deliveries ALTER COLUMN payload SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 is not available; delivery payloads stay pglz-compressed';
END
$$;
