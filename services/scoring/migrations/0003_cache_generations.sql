-- The same DDL on SQLite and PostgreSQL (both lists in lib.rs name this file).
-- Scores for now live in each replica's memory (docs/adr/0009); these rows
-- keep replicas coherent. An invalidation bumps the one generation and
-- stamps the techniques it names with it; every replica polls the
-- generation and drops what changed since the one it has seen.
-- technique_cache and organization_cache (0002) are no longer written: a
-- later contract migration drops them once no release reads them.
CREATE TABLE cache_generation (
    cache_key   TEXT PRIMARY KEY,
    generation  BIGINT NOT NULL
);
INSERT INTO cache_generation (cache_key, generation) VALUES ('scores', 0);

CREATE TABLE technique_generations (
    technique_id  TEXT PRIMARY KEY,
    generation    BIGINT NOT NULL
);
CREATE INDEX technique_generations_generation ON technique_generations (generation);
