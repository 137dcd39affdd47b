-- SQLite has json_each and json_extract natively; this keeps migration
-- versions aligned with PostgreSQL, whose 0001 defines the same functions.
SELECT 1;
