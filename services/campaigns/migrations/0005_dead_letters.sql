-- Outbox events a receiver refused for good, set aside so the relay keeps
-- delivering the events after them. The outbox row is marked delivered to
-- that receiver in the same transaction.
CREATE TABLE dead_letters (
    event_id  TEXT NOT NULL,
    receiver  TEXT NOT NULL,
    reason    TEXT NOT NULL,
    dead_at   BIGINT NOT NULL,
    PRIMARY KEY (event_id, receiver)
);
CREATE INDEX dead_letters_time ON dead_letters (dead_at, event_id);
