-- SQLite has json_each natively; this keeps migration versions aligned with
-- PostgreSQL, whose 0001 defines the same function for id sets.
SELECT 1;
