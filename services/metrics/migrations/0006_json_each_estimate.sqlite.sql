-- Nothing on SQLite: the PostgreSQL file sets the planner's row estimate
-- of its json_each function; SQLite's json_each is its own.
SELECT 1;
