-- Raw usage in 5-minute buckets (vnStat's finest tier). A pass adds its traffic to the
-- bucket's row for the same key instead of writing a row of its own, so a key costs one
-- row per 5 minutes however often passes (or the daemon's event flushes, up to one a
-- second) run. WITHOUT ROWID, keyed by the bucket and the usage key, so no separate index
-- repeats the key. Key columns cannot be NULL: "none" is stored as -1 (uid) or '' (text),
-- and the view `usage` shows them as NULL, as the table of schema 1-4 did.
-- A 5-minute bucket never straddles a local hour: every time zone's offset is a whole
-- number of 5 minutes.

CREATE TABLE usage_raw (
    ts          INTEGER NOT NULL,   -- start of the 5-minute UTC bucket
    kind        TEXT    NOT NULL CHECK (kind IN ('user', 'unattributed', 'excluded')),
    uid         INTEGER NOT NULL,   -- -1: none
    program     TEXT    NOT NULL,   -- '': not known
    reason      TEXT    NOT NULL,   -- '': none (set for kind 'unattributed')
    protocol    INTEGER NOT NULL,
    direction   TEXT    NOT NULL CHECK (direction IN ('out', 'in', '')),
    remote_addr TEXT    NOT NULL,
    port        INTEGER NOT NULL,
    rx_bytes    INTEGER NOT NULL,
    tx_bytes    INTEGER NOT NULL,
    rx_packets  INTEGER NOT NULL,
    tx_packets  INTEGER NOT NULL,
    CHECK (kind <> 'user' OR uid >= 0),
    CHECK (kind <> 'unattributed' OR (uid = -1 AND reason <> '')),
    PRIMARY KEY (ts, kind, uid, program, reason, protocol, direction, remote_addr, port)
) WITHOUT ROWID;

INSERT INTO usage_raw
SELECT (ts / 300) * 300, kind, ifnull(uid, -1), ifnull(program, ''), ifnull(reason, ''),
       protocol, ifnull(direction, ''), remote_addr, port,
       sum(rx_bytes), sum(tx_bytes), sum(rx_packets), sum(tx_packets)
FROM usage
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9;

DROP INDEX usage_ts;
DROP INDEX usage_uid_ts;
DROP TABLE usage;

-- Raw usage as before: one row per 5-minute bucket and key, NULL where not known.
CREATE VIEW usage AS
SELECT ts, kind, nullif(uid, -1) AS uid, nullif(program, '') AS program,
       nullif(reason, '') AS reason, protocol, nullif(direction, '') AS direction,
       remote_addr, port, rx_bytes, tx_bytes, rx_packets, tx_packets
FROM usage_raw;
