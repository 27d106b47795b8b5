-- Per-user running sums of the hour totals through each UTC day (issue 26), so that `report`
-- in local time reads a day that two of its periods share (every day, away from UTC) as
-- two rows per user: the running sum up to the local midnight, and the day's total (the
-- other side being the total less it), instead of the hour totals of one side (up to 12
-- rows per user). Append-only: never edit a shipped migration.
--
-- usage_day_prefixes holds, for each UTC day listed in usage_prefix_days and each hour of
-- it, per uid, kind, reason, via_uid, container and container_uid (usage_totals' key), the
-- sum of that key's hour totals (usage_totals, granularity 3600) of the day from its start
-- through that hour; a missing row is zero, and a key has rows from its first hour with a
-- total on. Days not listed have none (reports read their hours).
--   - A day is listed once it is over (store::totals: the rollup after a pass lists the
--     days before the pass's; this migration every day before today with hours).
--   - A pass dated in a listed day adds to the rows of its hour and of every later hour of
--     the day, in the transaction that adds to the totals (store::totals).
--   - The hourly -> daily rollup dates a day's rows at its start (its hour totals too):
--     it deletes the day's rows and listing in the same transaction (store::retention),
--     as the daily tier's retention does with the totals.
CREATE TABLE usage_day_prefixes (
    ts            INTEGER NOT NULL,   -- start of a UTC hour
    uid           INTEGER NOT NULL,
    kind          INTEGER NOT NULL CHECK (kind IN (0, 1, 2)),
    reason        TEXT    NOT NULL,
    via_uid       INTEGER NOT NULL,
    container     INTEGER NOT NULL,
    container_uid INTEGER NOT NULL,
    rx_bytes      INTEGER NOT NULL,
    tx_bytes      INTEGER NOT NULL,
    rx_packets    INTEGER NOT NULL,
    tx_packets    INTEGER NOT NULL,
    PRIMARY KEY (ts, uid, kind, reason, via_uid, container, container_uid)
) WITHOUT ROWID;

CREATE TABLE usage_prefix_days (
    day INTEGER PRIMARY KEY   -- start of a UTC day whose running sums are all in place
);

-- The days before today with hours of their own (not rolled into the daily tier), whose
-- totals are complete (usage_totals_backfill).
INSERT INTO usage_prefix_days
SELECT DISTINCT ts - ts % 86400
FROM usage_totals
WHERE granularity = 3600 AND ts % 86400 <> 0
  AND ts < CAST(strftime('%s', 'now') AS INTEGER) / 86400 * 86400
  AND ts - ts % 86400 >= coalesce((SELECT before FROM usage_totals_backfill), 0);

-- Every key of a day has a day total: each key's 24 hours, summed as they run, kept from
-- its first hour with a total on. (store::totals::PREFIXES_OF_DAY, for one day.)
WITH RECURSIVE h(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM h WHERE n < 23)
INSERT INTO usage_day_prefixes
SELECT t, uid, kind, reason, via_uid, container, container_uid, rx, tx, rp, tp
FROM (SELECT k.ts + 3600 * h.n AS t, k.uid, k.kind, k.reason, k.via_uid, k.container,
             k.container_uid,
             sum(coalesce(u.rx_bytes, 0)) OVER w AS rx,
             sum(coalesce(u.tx_bytes, 0)) OVER w AS tx,
             sum(coalesce(u.rx_packets, 0)) OVER w AS rp,
             sum(coalesce(u.tx_packets, 0)) OVER w AS tp,
             count(u.ts) OVER w AS seen
      FROM usage_prefix_days d
      JOIN usage_totals k ON k.granularity = 86400 AND k.ts = d.day
      JOIN h
      LEFT JOIN usage_totals u
        ON u.granularity = 3600 AND u.ts = k.ts + 3600 * h.n AND u.uid = k.uid
       AND u.kind = k.kind AND u.reason = k.reason AND u.via_uid = k.via_uid
       AND u.container = k.container AND u.container_uid = k.container_uid
      WINDOW w AS (PARTITION BY k.ts, k.uid, k.kind, k.reason, k.via_uid, k.container,
                                k.container_uid
                   ORDER BY h.n))
WHERE seen > 0;
