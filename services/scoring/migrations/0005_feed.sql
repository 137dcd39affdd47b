-- The change feed (docs/design.md §4, "Change feed"): the last published
-- state of every technique ('' for the organization), the numbered changes
-- WatchScores streams (regressions among them, with whether campaigns has
-- been told), and the one row that makes a feed pass happen once however
-- many replicas run it (a compare-and-set on its version).
CREATE TABLE score_states (
    technique_id   TEXT PRIMARY KEY,
    score          DOUBLE PRECISION NOT NULL,
    status         TEXT NOT NULL,
    observed_at    BIGINT NOT NULL
);

CREATE TABLE score_changes (
    seq            BIGINT PRIMARY KEY,
    kind           TEXT NOT NULL,               -- technique, regression, organization
    technique_id   TEXT NOT NULL,
    old_score      DOUBLE PRECISION NOT NULL,
    new_score      DOUBLE PRECISION NOT NULL,
    old_status     TEXT NOT NULL,
    new_status     TEXT NOT NULL,
    observed_at    BIGINT NOT NULL,
    notified       BIGINT NOT NULL              -- regressions: campaigns acknowledged
);
CREATE INDEX score_changes_pending ON score_changes (notified, seq);

CREATE TABLE feed_state (
    feed_key       TEXT PRIMARY KEY,
    version        BIGINT NOT NULL,
    generation     BIGINT NOT NULL,             -- the score generation last diffed
    last_seq       BIGINT NOT NULL,
    swept_at       BIGINT NOT NULL
);
INSERT INTO feed_state (feed_key, version, generation, last_seq, swept_at) VALUES ('scores', 0, 0, 0, 0);
