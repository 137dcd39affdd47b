-- Id sets are bound as one JSON array text and read with
-- `IN (SELECT value FROM json_each($1))`, which SQLite has natively. This
-- text overload gives PostgreSQL the same shape; it lives in the service's
-- own schema, and a text argument resolves to it rather than to the
-- built-in json_each(json).
CREATE OR REPLACE FUNCTION json_each(ids text)
RETURNS TABLE (value text)
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT json_array_elements_text(ids::json) $$;
