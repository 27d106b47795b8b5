-- Per-user totals for reports that answer at once (vnStat-style), kept beside the detail.
--
-- usage_totals holds, for every UTC hour (granularity 3600) and every UTC day (86400), the
-- sum of every usage row (any tier) whose ts falls in it, per uid, kind and reason — the
-- detail's own codes (uid -1 none; kind 0 user, 1 unattributed, 2 excluded; reason '' none).
-- A pass and a daemon flush add to them in the transaction that writes their usage rows, so
-- they never disagree with the detail; rollups move detail between tiers without changing
-- any row's hour or day, so they leave the totals alone. A daily detail row (older than the
-- hourly tier) has no hours: its day total is also its hour total at the day's start, which
-- is exactly where reports date that row.
CREATE TABLE usage_totals (
    granularity INTEGER NOT NULL CHECK (granularity IN (3600, 86400)),
    ts          INTEGER NOT NULL,   -- start of the UTC hour or day
    uid         INTEGER NOT NULL,
    kind        INTEGER NOT NULL CHECK (kind IN (0, 1, 2)),
    reason      TEXT    NOT NULL,
    rx_bytes    INTEGER NOT NULL,
    tx_bytes    INTEGER NOT NULL,
    rx_packets  INTEGER NOT NULL,
    tx_packets  INTEGER NOT NULL,
    PRIMARY KEY (granularity, ts, uid, kind, reason)
) WITHOUT ROWID;

-- The totals are complete for rows dated ts >= before (NULL: complete); passes add to them
-- only when dated so. Rows older than that are filled in from the detail a day at a time
-- after passes (Store::backfill_totals), newest first, so that a large database is never locked for long; until then reports of older
-- periods read the detail.
CREATE TABLE usage_totals_backfill (
    id     INTEGER PRIMARY KEY CHECK (id = 0),
    before INTEGER
);

-- This hour's detail now, so that the passes to come add to complete totals; the hours
-- before are left to the backfill (nothing, for a new database). An hour, not a day: the
-- migration runs while the first writer opens the database, and a busy host's day is a
-- million rows.
INSERT INTO usage_totals_backfill
SELECT 0, CASE WHEN EXISTS (SELECT 1 FROM usage_raw) OR EXISTS (SELECT 1 FROM usage_tiers)
               THEN (CAST(strftime('%s', 'now') AS INTEGER) / 3600) * 3600 END;

CREATE TEMP VIEW totals_source AS
SELECT ts, uid, kind, reason, rx_bytes, tx_bytes, rx_packets, tx_packets FROM usage_raw
UNION ALL
SELECT ts, uid, kind, reason, rx_bytes, tx_bytes, rx_packets, tx_packets FROM usage_tiers;

INSERT INTO usage_totals
SELECT g, ts - ts % g AS t, uid, kind, reason,
       sum(rx_bytes), sum(tx_bytes), sum(rx_packets), sum(tx_packets)
FROM totals_source, (SELECT 3600 AS g UNION ALL SELECT 86400)
WHERE ts >= (SELECT before FROM usage_totals_backfill)
GROUP BY g, t, uid, kind, reason;

DROP VIEW totals_source;
