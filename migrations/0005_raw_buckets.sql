-- Compact usage storage. Schema 5 keeps the columns that queries see (the views `usage`,
-- `usage_rollup` and `usage_all` read as before) but stores them smaller:
--
-- * Raw usage in 5-minute buckets (vnStat's finest tier). A pass adds its traffic to the
--   bucket's row for the same key instead of writing a row of its own, so a key costs one
--   row per 5 minutes however often passes (or the daemon's event flushes, up to one a
--   second) run. A 5-minute bucket never straddles a local hour: every time zone's offset
--   is a whole number of 5 minutes.
-- * Remote addresses and program names are stored once (`remotes`, and `programs` from
--   schema 3) and referred to by id; kind and direction are small integers.
-- * Tables are WITHOUT ROWID, keyed by time and the usage key, so no index repeats a row.
--
-- Codes: kind 0 user, 1 unattributed, 2 excluded; direction 0 none (rolled up), 1 out,
-- 2 in; uid -1 none; program 0 none (no programs row has id 0); reason '' none.
-- Rolled-up rows that no longer know a program or remote use the name '' (shown as
-- "(other)").

CREATE TABLE remotes (
    id   INTEGER PRIMARY KEY,
    addr TEXT    NOT NULL UNIQUE
);

INSERT OR IGNORE INTO programs (name) VALUES ('');
INSERT OR IGNORE INTO programs (name)
    SELECT program FROM usage WHERE program IS NOT NULL
    UNION SELECT program FROM usage_rollup WHERE program IS NOT NULL;
INSERT INTO remotes (addr) VALUES ('');
INSERT OR IGNORE INTO remotes (addr)
    SELECT remote_addr FROM usage UNION SELECT remote_addr FROM usage_rollup;

CREATE TABLE usage_raw (
    ts          INTEGER NOT NULL,   -- start of the 5-minute UTC bucket
    uid         INTEGER NOT NULL,
    kind        INTEGER NOT NULL CHECK (kind IN (0, 1, 2)),
    reason      TEXT    NOT NULL,
    program     INTEGER NOT NULL,
    remote      INTEGER NOT NULL,
    protocol    INTEGER NOT NULL,
    port        INTEGER NOT NULL,
    direction   INTEGER NOT NULL CHECK (direction IN (0, 1, 2)),
    rx_bytes    INTEGER NOT NULL,
    tx_bytes    INTEGER NOT NULL,
    rx_packets  INTEGER NOT NULL,
    tx_packets  INTEGER NOT NULL,
    CHECK (kind <> 0 OR uid >= 0),
    CHECK (kind <> 1 OR (uid = -1 AND reason <> '')),
    PRIMARY KEY (ts, uid, kind, reason, program, remote, protocol, port, direction)
) WITHOUT ROWID;

-- Hourly (granularity 3600) and daily (86400) rollups, keyed by time first so that reports
-- read a period as a key range.
CREATE TABLE usage_tiers (
    granularity INTEGER NOT NULL CHECK (granularity IN (3600, 86400)),
    ts          INTEGER NOT NULL,   -- start of the UTC hour or day
    uid         INTEGER NOT NULL,
    kind        INTEGER NOT NULL CHECK (kind IN (0, 1, 2)),
    reason      TEXT    NOT NULL,
    program     INTEGER NOT NULL,
    remote      INTEGER NOT NULL,
    protocol    INTEGER NOT NULL,
    port        INTEGER NOT NULL,
    rx_bytes    INTEGER NOT NULL,
    tx_bytes    INTEGER NOT NULL,
    rx_packets  INTEGER NOT NULL,
    tx_packets  INTEGER NOT NULL,
    PRIMARY KEY (ts, granularity, uid, kind, reason, program, remote, protocol, port)
) WITHOUT ROWID;

INSERT INTO usage_raw
SELECT (u.ts / 300) * 300, ifnull(u.uid, -1),
       CASE u.kind WHEN 'user' THEN 0 WHEN 'unattributed' THEN 1 ELSE 2 END,
       ifnull(u.reason, ''), ifnull(p.id, 0), r.id, u.protocol, u.port,
       CASE u.direction WHEN 'out' THEN 1 WHEN 'in' THEN 2 ELSE 0 END,
       sum(u.rx_bytes), sum(u.tx_bytes), sum(u.rx_packets), sum(u.tx_packets)
FROM usage u LEFT JOIN programs p ON p.name = u.program JOIN remotes r ON r.addr = u.remote_addr
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9;

INSERT INTO usage_tiers
SELECT CASE u.granularity WHEN 'hour' THEN 3600 ELSE 86400 END, u.ts, ifnull(u.uid, -1),
       CASE u.kind WHEN 'user' THEN 0 WHEN 'unattributed' THEN 1 ELSE 2 END,
       ifnull(u.reason, ''), ifnull(p.id, 0), r.id, u.protocol, u.port,
       sum(u.rx_bytes), sum(u.tx_bytes), sum(u.rx_packets), sum(u.tx_packets)
FROM usage_rollup u LEFT JOIN programs p ON p.name = u.program
     JOIN remotes r ON r.addr = u.remote_addr
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9;

DROP INDEX usage_ts;
DROP INDEX usage_uid_ts;
DROP TABLE usage;
DROP INDEX usage_rollup_gran_ts;
DROP TABLE usage_rollup;

-- Raw usage, one row per 5-minute bucket and key, as schema 1-4 showed it.
CREATE VIEW usage AS
SELECT u.ts,
       CASE u.kind WHEN 0 THEN 'user' WHEN 1 THEN 'unattributed' ELSE 'excluded' END AS kind,
       nullif(u.uid, -1) AS uid, p.name AS program, nullif(u.reason, '') AS reason,
       u.protocol, CASE u.direction WHEN 1 THEN 'out' WHEN 2 THEN 'in' END AS direction,
       r.addr AS remote_addr, u.port,
       u.rx_bytes, u.tx_bytes, u.rx_packets, u.tx_packets
FROM usage_raw u LEFT JOIN programs p ON p.id = u.program JOIN remotes r ON r.id = u.remote;

-- Rolled-up usage, as schema 4 showed it.
CREATE VIEW usage_rollup AS
SELECT CASE u.granularity WHEN 3600 THEN 'hour' ELSE 'day' END AS granularity, u.ts,
       CASE u.kind WHEN 0 THEN 'user' WHEN 1 THEN 'unattributed' ELSE 'excluded' END AS kind,
       nullif(u.uid, -1) AS uid, p.name AS program, nullif(u.reason, '') AS reason,
       u.protocol, r.addr AS remote_addr, u.port,
       u.rx_bytes, u.tx_bytes, u.rx_packets, u.tx_packets
FROM usage_tiers u LEFT JOIN programs p ON p.id = u.program JOIN remotes r ON r.id = u.remote;
