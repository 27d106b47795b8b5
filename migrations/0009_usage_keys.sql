-- Usage per key per UTC hour and day over the raw tier, so that `top --by remote|program|
-- port|via` over a week reads a few thousand rows a day instead of a million raw buckets.
-- (Numbered 0011 by agreement: other work in flight takes 0008-0010.)
--
-- usage_keys holds, for every UTC hour (granularity 3600) and UTC day (86400), the sum of
-- the raw rows (usage_raw) dated in it and in [lo, hi) of usage_keys_span, per uid, kind,
-- reason, program, remote, protocol and port (the raw key less the direction, which no
-- report groups by). An hour or day that lies wholly in [lo, hi) is therefore complete
-- and reports read it here; the rest of a period they read from the detail.
--
-- Upkeep (store::keys): passes and daemon flushes add their rows dated in [lo, hi) in the
-- transaction that writes them; after passes `hi` advances over complete 5-minute buckets
-- a bounded step at a time (an older database's raw tier is filled in this way, oldest
-- first); rolling a raw hour up into the hourly tier deletes its keys and raises `lo` past
-- it in the same transaction. Nothing is kept past the raw tier: the hourly and daily
-- tiers are already per key.
CREATE TABLE usage_keys (
    granularity INTEGER NOT NULL CHECK (granularity IN (3600, 86400)),
    ts          INTEGER NOT NULL,   -- start of the UTC hour or day
    uid         INTEGER NOT NULL,
    kind        INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    program     INTEGER NOT NULL,
    remote      INTEGER NOT NULL,
    protocol    INTEGER NOT NULL,
    port        INTEGER NOT NULL,
    rx_bytes    INTEGER NOT NULL,
    tx_bytes    INTEGER NOT NULL,
    rx_packets  INTEGER NOT NULL,
    tx_packets  INTEGER NOT NULL,
    PRIMARY KEY (granularity, ts, uid, kind, reason, program, remote, protocol, port)
) WITHOUT ROWID;

-- Nothing summed yet: the span starts empty at the oldest raw bucket (or 0).
CREATE TABLE usage_keys_span (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    lo INTEGER NOT NULL,
    hi INTEGER NOT NULL,
    CHECK (lo <= hi)
);
INSERT INTO usage_keys_span
SELECT 0, coalesce(min(ts), 0), coalesce(min(ts), 0) FROM usage_raw;
