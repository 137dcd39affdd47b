-- PostgreSQL only: the chain history trigger locks its chain first (see
-- the PostgreSQL file). SQLite serialises writers, so two validations of
-- one chain never overlap; nothing to change.
SELECT 1;
