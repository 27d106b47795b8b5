-- Traffic by cgroup (issue 28): every socket carries the cgroup v2 of the process that
-- created it (sock_diag's INET_DIAG_CGROUP_ID). Its path is stored once, in `cgroups`, as
-- `programs` are, with what the path says: the systemd unit (`cgroup::unit`) and the Slurm
-- job (`cgroup::job`, kept only under a root-owned `…slurmstepd.scope`; else NULL).
--
--   cgroup   cgroups.id; 0 none (no cgroups row has id 0: no cgroup known, /proc/net's
--            sockets, unattributed traffic, every row written before this migration)
--
-- It joins the key of the usage tables that keep the program (usage_raw, usage_tiers,
-- usage_keys, usage_tier_days), right after `program`; usage_totals stays per user. The
-- tables are rebuilt as 0015 rebuilt them (a key cannot change in place), every existing
-- row with cgroup 0; flow_state and connection_log gain a column. The views that show the
-- program show the cgroup's path, unit and job too, as their last columns.
-- Append-only: never edit a shipped migration.

CREATE TABLE cgroups (
    id   INTEGER PRIMARY KEY,       -- never 0
    path TEXT    NOT NULL UNIQUE,   -- relative to the cgroup2 root, leading '/'
    unit TEXT,                      -- the innermost .service/.scope, else .slice; NULL none
    job  INTEGER,                   -- the Slurm job id; NULL none or not trusted
    CHECK (id <> 0)
);

ALTER TABLE flow_state ADD COLUMN cgroup INTEGER NOT NULL DEFAULT 0;
ALTER TABLE connection_log ADD COLUMN cgroup INTEGER NOT NULL DEFAULT 0;

DROP VIEW usage_daily;
DROP VIEW usage_monthly;
DROP VIEW top_remotes_daily;
DROP VIEW usage_all;
DROP VIEW usage;
DROP VIEW usage_rollup;

CREATE TABLE usage_raw_cgroup (
    ts            INTEGER NOT NULL,   -- start of the 5-minute UTC bucket
    uid           INTEGER NOT NULL,
    kind          INTEGER NOT NULL CHECK (kind IN (0, 1, 2)),
    reason        TEXT    NOT NULL,
    via_uid       INTEGER NOT NULL,
    container     INTEGER NOT NULL,
    container_uid INTEGER NOT NULL,
    program       INTEGER NOT NULL,
    cgroup        INTEGER NOT NULL,
    remote        INTEGER NOT NULL,
    protocol      INTEGER NOT NULL,
    port          INTEGER NOT NULL,
    direction     INTEGER NOT NULL CHECK (direction IN (0, 1, 2)),
    rx_bytes      INTEGER NOT NULL,
    tx_bytes      INTEGER NOT NULL,
    rx_packets    INTEGER NOT NULL,
    tx_packets    INTEGER NOT NULL,
    CHECK (kind <> 0 OR uid >= 0),
    CHECK (kind <> 1 OR (uid = -1 AND reason <> '')),
    CHECK (container <> 0 OR container_uid = -1),
    PRIMARY KEY (ts, uid, kind, reason, via_uid, container, container_uid, program, cgroup,
                 remote, protocol, port, direction)
) WITHOUT ROWID;

CREATE TABLE usage_tiers_cgroup (
    granularity   INTEGER NOT NULL CHECK (granularity IN (3600, 86400)),
    ts            INTEGER NOT NULL,   -- start of the UTC hour or day
    uid           INTEGER NOT NULL,
    kind          INTEGER NOT NULL CHECK (kind IN (0, 1, 2)),
    reason        TEXT    NOT NULL,
    via_uid       INTEGER NOT NULL,
    container     INTEGER NOT NULL,
    container_uid INTEGER NOT NULL,
    program       INTEGER NOT NULL,
    cgroup        INTEGER NOT NULL,
    remote        INTEGER NOT NULL,
    protocol      INTEGER NOT NULL,
    port          INTEGER NOT NULL,
    rx_bytes      INTEGER NOT NULL,
    tx_bytes      INTEGER NOT NULL,
    rx_packets    INTEGER NOT NULL,
    tx_packets    INTEGER NOT NULL,
    PRIMARY KEY (ts, granularity, uid, kind, reason, via_uid, container, container_uid,
                 program, cgroup, remote, protocol, port)
) WITHOUT ROWID;

CREATE TABLE usage_keys_cgroup (
    granularity   INTEGER NOT NULL CHECK (granularity IN (3600, 86400)),
    ts            INTEGER NOT NULL,   -- start of the UTC hour or day
    uid           INTEGER NOT NULL,
    kind          INTEGER NOT NULL,
    reason        TEXT    NOT NULL,
    via_uid       INTEGER NOT NULL,
    container     INTEGER NOT NULL,
    container_uid INTEGER NOT NULL,
    program       INTEGER NOT NULL,
    cgroup        INTEGER NOT NULL,
    remote        INTEGER NOT NULL,
    protocol      INTEGER NOT NULL,
    port          INTEGER NOT NULL,
    rx_bytes      INTEGER NOT NULL,
    tx_bytes      INTEGER NOT NULL,
    rx_packets    INTEGER NOT NULL,
    tx_packets    INTEGER NOT NULL,
    PRIMARY KEY (granularity, ts, uid, kind, reason, via_uid, container, container_uid,
                 program, cgroup, remote, protocol, port)
) WITHOUT ROWID;

CREATE TABLE usage_tier_days_cgroup (
    ts            INTEGER NOT NULL,   -- start of the UTC day
    uid           INTEGER NOT NULL,
    kind          INTEGER NOT NULL,
    reason        TEXT    NOT NULL,
    via_uid       INTEGER NOT NULL,
    container     INTEGER NOT NULL,
    container_uid INTEGER NOT NULL,
    program       INTEGER NOT NULL,
    cgroup        INTEGER NOT NULL,
    remote        INTEGER NOT NULL,
    protocol      INTEGER NOT NULL,
    port          INTEGER NOT NULL,
    rx_bytes      INTEGER NOT NULL,
    tx_bytes      INTEGER NOT NULL,
    rx_packets    INTEGER NOT NULL,
    tx_packets    INTEGER NOT NULL,
    PRIMARY KEY (ts, uid, kind, reason, via_uid, container, container_uid, program, cgroup,
                 remote, protocol, port)
) WITHOUT ROWID;

-- Every row copied with cgroup 0; each table dropped once copied, so that the next copy
-- reuses its pages (the file grows by about the largest table, not by all of them).
INSERT INTO usage_raw_cgroup
SELECT ts, uid, kind, reason, via_uid, container, container_uid, program, 0, remote, protocol,
       port, direction, rx_bytes, tx_bytes, rx_packets, tx_packets
FROM usage_raw;
DROP TABLE usage_raw;
ALTER TABLE usage_raw_cgroup RENAME TO usage_raw;

INSERT INTO usage_tiers_cgroup
SELECT granularity, ts, uid, kind, reason, via_uid, container, container_uid, program, 0,
       remote, protocol, port, rx_bytes, tx_bytes, rx_packets, tx_packets
FROM usage_tiers;
-- (The triggers of 0015 go with it; made again below over the new key.)
DROP TABLE usage_tiers;
ALTER TABLE usage_tiers_cgroup RENAME TO usage_tiers;

INSERT INTO usage_keys_cgroup
SELECT granularity, ts, uid, kind, reason, via_uid, container, container_uid, program, 0,
       remote, protocol, port, rx_bytes, tx_bytes, rx_packets, tx_packets
FROM usage_keys;
DROP TABLE usage_keys;
ALTER TABLE usage_keys_cgroup RENAME TO usage_keys;

INSERT INTO usage_tier_days_cgroup
SELECT ts, uid, kind, reason, via_uid, container, container_uid, program, 0, remote,
       protocol, port, rx_bytes, tx_bytes, rx_packets, tx_packets
FROM usage_tier_days;
DROP TABLE usage_tier_days;
ALTER TABLE usage_tier_days_cgroup RENAME TO usage_tier_days;

-- usage_tier_days kept equal to the hourly rows (as 0014), keyed by the cgroup too.
CREATE TRIGGER usage_tier_days_insert AFTER INSERT ON usage_tiers
WHEN NEW.granularity = 3600
BEGIN
    INSERT INTO usage_tier_days
    VALUES (NEW.ts - NEW.ts % 86400, NEW.uid, NEW.kind, NEW.reason, NEW.via_uid,
            NEW.container, NEW.container_uid, NEW.program, NEW.cgroup, NEW.remote,
            NEW.protocol, NEW.port, NEW.rx_bytes, NEW.tx_bytes, NEW.rx_packets,
            NEW.tx_packets)
    ON CONFLICT DO UPDATE SET rx_bytes = rx_bytes + excluded.rx_bytes,
        tx_bytes = tx_bytes + excluded.tx_bytes,
        rx_packets = rx_packets + excluded.rx_packets,
        tx_packets = tx_packets + excluded.tx_packets;
END;

CREATE TRIGGER usage_tier_days_update AFTER UPDATE ON usage_tiers
WHEN NEW.granularity = 3600
BEGIN
    UPDATE usage_tier_days
    SET rx_bytes = rx_bytes + NEW.rx_bytes - OLD.rx_bytes,
        tx_bytes = tx_bytes + NEW.tx_bytes - OLD.tx_bytes,
        rx_packets = rx_packets + NEW.rx_packets - OLD.rx_packets,
        tx_packets = tx_packets + NEW.tx_packets - OLD.tx_packets
    WHERE ts = NEW.ts - NEW.ts % 86400 AND uid = NEW.uid AND kind = NEW.kind
      AND reason = NEW.reason AND via_uid = NEW.via_uid AND container = NEW.container
      AND container_uid = NEW.container_uid AND program = NEW.program
      AND cgroup = NEW.cgroup AND remote = NEW.remote AND protocol = NEW.protocol
      AND port = NEW.port;
END;

-- The views of 0015 with the cgroup's path, unit and job as their last columns (NULL
-- where none).
CREATE VIEW usage AS
SELECT u.ts,
       CASE u.kind WHEN 0 THEN 'user' WHEN 1 THEN 'unattributed' ELSE 'excluded' END AS kind,
       nullif(u.uid, -1) AS uid, p.name AS program, nullif(u.reason, '') AS reason,
       u.protocol, CASE u.direction WHEN 1 THEN 'out' WHEN 2 THEN 'in' END AS direction,
       r.addr AS remote_addr, u.port,
       u.rx_bytes, u.tx_bytes, u.rx_packets, u.tx_packets,
       nullif(u.via_uid, -1) AS via_uid, c.name AS container,
       nullif(u.container_uid, -1) AS container_uid,
       g.path AS cgroup, g.unit AS unit, g.job AS job
FROM usage_raw u LEFT JOIN programs p ON p.id = u.program JOIN remotes r ON r.id = u.remote
     LEFT JOIN containers c ON u.container <> 0 AND c.id = u.container
     LEFT JOIN cgroups g ON u.cgroup <> 0 AND g.id = u.cgroup;

CREATE VIEW usage_rollup AS
SELECT CASE u.granularity WHEN 3600 THEN 'hour' ELSE 'day' END AS granularity, u.ts,
       CASE u.kind WHEN 0 THEN 'user' WHEN 1 THEN 'unattributed' ELSE 'excluded' END AS kind,
       nullif(u.uid, -1) AS uid, p.name AS program, nullif(u.reason, '') AS reason,
       u.protocol, r.addr AS remote_addr, u.port,
       u.rx_bytes, u.tx_bytes, u.rx_packets, u.tx_packets,
       nullif(u.via_uid, -1) AS via_uid, c.name AS container,
       nullif(u.container_uid, -1) AS container_uid,
       g.path AS cgroup, g.unit AS unit, g.job AS job
FROM usage_tiers u LEFT JOIN programs p ON p.id = u.program JOIN remotes r ON r.id = u.remote
     LEFT JOIN containers c ON u.container <> 0 AND c.id = u.container
     LEFT JOIN cgroups g ON u.cgroup <> 0 AND g.id = u.cgroup;

CREATE VIEW usage_all AS
SELECT ts, kind, uid, program, reason, protocol, direction, remote_addr, port,
       rx_bytes, tx_bytes, rx_packets, tx_packets, via_uid, container, container_uid,
       cgroup, unit, job
FROM usage
UNION ALL
SELECT ts, kind, uid, program, reason, protocol, NULL, remote_addr, port,
       rx_bytes, tx_bytes, rx_packets, tx_packets, via_uid, container, container_uid,
       cgroup, unit, job
FROM usage_rollup;

-- As 0004 made them (they read usage_all).
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
