-- The same DDL on SQLite and PostgreSQL (both lists in lib.rs name this file).
-- Replicas also hold the catalogue side of scoring (tactics, live
-- techniques, each technique's mapped rules, countermeasures and actors) in
-- memory; an invalidation that comes from anyone but campaigns (ingest's
-- imports) moves this generation, and every replica then drops its
-- catalogue (docs/adr/0009).
INSERT INTO cache_generation (cache_key, generation) VALUES ('catalogue', 0);
