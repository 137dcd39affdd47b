-- Sets travel as one bound JSON array text, so one statement serves any
-- number of ids or rows on both backends:
--   ids:  IN (SELECT value FROM json_each($1))
--   rows: SELECT json_extract(value, '$.field') ... FROM json_each($1)
-- SQLite has both functions natively. These text overloads give PostgreSQL
-- the same shapes; they live in the service's own schema, and a text
-- argument resolves to them rather than to the built-in json_each(json).
-- json_extract here supports the '$.a.b' paths the stores use.
CREATE OR REPLACE FUNCTION json_each(items text)
RETURNS TABLE (value text)
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT json_array_elements_text(items::json) $$;

CREATE OR REPLACE FUNCTION json_extract(doc text, path text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT (doc::json) #>> string_to_array(substr(path, 3), '.') $$;
