-- PostgreSQL only (SQLite plans its own json_each from the real input).
-- The planner takes a set-returning SQL function to return 1,000 rows
-- unless told otherwise; every statement here passes the ids of one batch,
-- and the per-transition tally refresh passes one technique. With 1,000
-- the refresh of one technique was planned as hash joins over whole
-- tables (tests, chain_effective, detection_results: 42-87 ms, the
-- TransitionTest bottleneck on PostgreSQL); with 1 it walks the indexes
-- from the technique (2-3 ms). Measured in docs/BENCHMARKS.md.
ALTER FUNCTION json_each(text) ROWS 1;
