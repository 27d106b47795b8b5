-- Per-user totals per 5-minute bucket of the raw tier (issue 26), so that `report` in local
-- time reads an hour that two of its periods share (a zone half or a quarter of an hour
-- from UTC: India, Nepal, parts of Australia) as 12 rows per user instead of every raw row
-- of the hour (about 47,000 on a busy host), and the edges of a window inside the raw tier
-- as well. Append-only: never edit a shipped migration.
--
-- usage_bucket_totals holds, for every bucket of usage_raw, the sum of its rows per uid,
-- kind, reason, via_uid, container and container_uid (usage_totals' key, by bucket): no
-- more, no less. A pass and a daemon flush add to it in the transaction that writes their
-- raw rows (store::totals); the raw -> hourly rollup deletes it with the raw rows of the
-- hour it moves (store::retention), in the same transaction. Nothing else writes
-- usage_raw.
CREATE TABLE usage_bucket_totals (
    ts            INTEGER NOT NULL,   -- start of the 5-minute UTC bucket, as in usage_raw
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

-- The raw rows' key begins with these columns: summed in key order, without a sort.
INSERT INTO usage_bucket_totals
SELECT ts, uid, kind, reason, via_uid, container, container_uid,
       sum(rx_bytes), sum(tx_bytes), sum(rx_packets), sum(tx_packets)
FROM usage_raw
GROUP BY ts, uid, kind, reason, via_uid, container, container_uid;
