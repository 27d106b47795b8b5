-- Retention tiers: usage rows older than the raw retention are rolled up into hourly rows
-- (per user, program, remote, protocol and port), hourly rows older than the hourly retention
-- into daily rows (per user). The views read raw and rolled-up rows alike.

CREATE TABLE usage_rollup (
    id          INTEGER PRIMARY KEY,
    granularity TEXT    NOT NULL CHECK (granularity IN ('hour', 'day')),
    ts          INTEGER NOT NULL,   -- start of the UTC hour or day
    kind        TEXT    NOT NULL CHECK (kind IN ('user', 'unattributed', 'excluded')),
    uid         INTEGER,
    program     TEXT,
    reason      TEXT,
    protocol    INTEGER NOT NULL,   -- 0 in daily rows
    remote_addr TEXT    NOT NULL,   -- '' in daily rows
    port        INTEGER NOT NULL,   -- 0 in daily rows
    rx_bytes    INTEGER NOT NULL,
    tx_bytes    INTEGER NOT NULL,
    rx_packets  INTEGER NOT NULL,
    tx_packets  INTEGER NOT NULL
);
CREATE INDEX usage_rollup_gran_ts ON usage_rollup (granularity, ts);

-- Every usage row, raw or rolled up.
CREATE VIEW usage_all AS
SELECT ts, kind, uid, program, reason, protocol, direction, remote_addr, port,
       rx_bytes, tx_bytes, rx_packets, tx_packets
FROM usage
UNION ALL
SELECT ts, kind, uid, program, reason, protocol, NULL, remote_addr, port,
       rx_bytes, tx_bytes, rx_packets, tx_packets
FROM usage_rollup;

DROP VIEW usage_daily;
CREATE VIEW usage_daily AS
SELECT strftime('%Y-%m-%d', u.ts, 'unixepoch') AS period,
       u.uid                                   AS uid,
       n.name                                  AS user,
       sum(u.rx_bytes)                         AS rx_bytes,
       sum(u.tx_bytes)                         AS tx_bytes,
       sum(u.rx_packets)                       AS rx_packets,
       sum(u.tx_packets)                       AS tx_packets
FROM usage_all u LEFT JOIN users n ON n.uid = u.uid
WHERE u.kind <> 'excluded'
GROUP BY period, u.uid;

DROP VIEW usage_monthly;
CREATE VIEW usage_monthly AS
SELECT strftime('%Y-%m', u.ts, 'unixepoch') AS period,
       u.uid                                AS uid,
       n.name                               AS user,
       sum(u.rx_bytes)                      AS rx_bytes,
       sum(u.tx_bytes)                      AS tx_bytes,
       sum(u.rx_packets)                    AS rx_packets,
       sum(u.tx_packets)                    AS tx_packets
FROM usage_all u LEFT JOIN users n ON n.uid = u.uid
WHERE u.kind <> 'excluded'
GROUP BY period, u.uid;

-- Daily rows no longer know remotes: this view covers the raw and hourly tiers.
DROP VIEW top_remotes_daily;
CREATE VIEW top_remotes_daily AS
SELECT strftime('%Y-%m-%d', u.ts, 'unixepoch') AS period,
       u.uid                                   AS uid,
       n.name                                  AS user,
       u.remote_addr                           AS remote,
       sum(u.rx_bytes)                         AS rx_bytes,
       sum(u.tx_bytes)                         AS tx_bytes,
       sum(u.rx_packets)                       AS rx_packets,
       sum(u.tx_packets)                       AS tx_packets
FROM usage_all u LEFT JOIN users n ON n.uid = u.uid
WHERE u.kind <> 'excluded' AND u.remote_addr <> ''
GROUP BY period, u.uid, u.remote_addr;
