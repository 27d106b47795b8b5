-- One column per kind of fact (issue 27). Until now a usage row's `reason` packed four
-- kinds: 'via:UID' (charged to the holder of a delegating service's socket of uid UID,
-- migration 0007), 'ns:ID:UID' (found through a container's socket: ID the containers.id,
-- UID the uid inside, migration 0010), a true reason ('no-socket', 'ambiguous-holders', …)
-- or ''. Every table keyed by it (usage_raw, usage_tiers, usage_totals, usage_keys,
-- usage_tier_days) now has them apart, in its key:
--
--   reason         a true reason only; '' none
--   via_uid        the delegating service's uid; -1 none
--   container      containers.id; 0 none (no containers row has id 0)
--   container_uid  the socket's uid inside that container; -1 none
--
-- (Codes, not NULL: they are part of WITHOUT ROWID primary keys, which SQLite keeps NOT
-- NULL; 0 and -1 as uid -1 and program 0 already are.) Every row is converted; the views
-- read the columns and show what they showed before. Append-only: never edit a shipped
-- migration. The tables are rebuilt (a key cannot change in place): a busy year's
-- database takes a while, once.

-- Every view reading the usage tables, and the views reading those, are made again below.
DROP VIEW usage_daily;
DROP VIEW usage_monthly;
DROP VIEW top_remotes_daily;
DROP VIEW usage_all;
DROP VIEW usage;
DROP VIEW usage_rollup;

CREATE TABLE usage_raw_typed (
    ts            INTEGER NOT NULL,   -- start of the 5-minute UTC bucket
    uid           INTEGER NOT NULL,
    kind          INTEGER NOT NULL CHECK (kind IN (0, 1, 2)),
    reason        TEXT    NOT NULL,
    via_uid       INTEGER NOT NULL,
    container     INTEGER NOT NULL,
    container_uid INTEGER NOT NULL,
    program       INTEGER NOT NULL,
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
    PRIMARY KEY (ts, uid, kind, reason, via_uid, container, container_uid, program, remote,
                 protocol, port, direction)
) WITHOUT ROWID;

CREATE TABLE usage_tiers_typed (
    granularity   INTEGER NOT NULL CHECK (granularity IN (3600, 86400)),
    ts            INTEGER NOT NULL,   -- start of the UTC hour or day
    uid           INTEGER NOT NULL,
    kind          INTEGER NOT NULL CHECK (kind IN (0, 1, 2)),
    reason        TEXT    NOT NULL,
    via_uid       INTEGER NOT NULL,
    container     INTEGER NOT NULL,
    container_uid INTEGER NOT NULL,
    program       INTEGER NOT NULL,
    remote        INTEGER NOT NULL,
    protocol      INTEGER NOT NULL,
    port          INTEGER NOT NULL,
    rx_bytes      INTEGER NOT NULL,
    tx_bytes      INTEGER NOT NULL,
    rx_packets    INTEGER NOT NULL,
    tx_packets    INTEGER NOT NULL,
    PRIMARY KEY (ts, granularity, uid, kind, reason, via_uid, container, container_uid,
                 program, remote, protocol, port)
) WITHOUT ROWID;

CREATE TABLE usage_totals_typed (
    granularity   INTEGER NOT NULL CHECK (granularity IN (3600, 86400)),
    ts            INTEGER NOT NULL,   -- start of the UTC hour or day
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
    PRIMARY KEY (granularity, ts, uid, kind, reason, via_uid, container, container_uid)
) WITHOUT ROWID;

CREATE TABLE usage_keys_typed (
    granularity   INTEGER NOT NULL CHECK (granularity IN (3600, 86400)),
    ts            INTEGER NOT NULL,   -- start of the UTC hour or day
    uid           INTEGER NOT NULL,
    kind          INTEGER NOT NULL,
    reason        TEXT    NOT NULL,
    via_uid       INTEGER NOT NULL,
    container     INTEGER NOT NULL,
    container_uid INTEGER NOT NULL,
    program       INTEGER NOT NULL,
    remote        INTEGER NOT NULL,
    protocol      INTEGER NOT NULL,
    port          INTEGER NOT NULL,
    rx_bytes      INTEGER NOT NULL,
    tx_bytes      INTEGER NOT NULL,
    rx_packets    INTEGER NOT NULL,
    tx_packets    INTEGER NOT NULL,
    PRIMARY KEY (granularity, ts, uid, kind, reason, via_uid, container, container_uid,
                 program, remote, protocol, port)
) WITHOUT ROWID;

CREATE TABLE usage_tier_days_typed (
    ts            INTEGER NOT NULL,   -- start of the UTC day
    uid           INTEGER NOT NULL,
    kind          INTEGER NOT NULL,
    reason        TEXT    NOT NULL,
    via_uid       INTEGER NOT NULL,
    container     INTEGER NOT NULL,
    container_uid INTEGER NOT NULL,
    program       INTEGER NOT NULL,
    remote        INTEGER NOT NULL,
    protocol      INTEGER NOT NULL,
    port          INTEGER NOT NULL,
    rx_bytes      INTEGER NOT NULL,
    tx_bytes      INTEGER NOT NULL,
    rx_packets    INTEGER NOT NULL,
    tx_packets    INTEGER NOT NULL,
    PRIMARY KEY (ts, uid, kind, reason, via_uid, container, container_uid, program, remote,
                 protocol, port)
) WITHOUT ROWID;

-- The last time the packed form is read: `reason` split into its four kinds, as the views
-- of 0010 split it. Distinct packed values give distinct typed keys, so no rows merge.
-- Each table is dropped once copied, so that the next copy reuses its pages: the file
-- grows by about the largest table, not by all of them.
INSERT INTO usage_raw_typed
SELECT ts, uid, kind,
       CASE WHEN reason LIKE 'via:%' OR reason LIKE 'ns:%' THEN '' ELSE reason END,
       CASE WHEN reason LIKE 'via:%' THEN CAST(substr(reason, 5) AS INTEGER) ELSE -1 END,
       CASE WHEN reason LIKE 'ns:%' THEN CAST(substr(reason, 4) AS INTEGER) ELSE 0 END,
       CASE WHEN reason LIKE 'ns:%'
            THEN CAST(substr(reason, 4 + instr(substr(reason, 4), ':')) AS INTEGER)
            ELSE -1 END,
       program, remote, protocol, port, direction, rx_bytes, tx_bytes, rx_packets, tx_packets
FROM usage_raw;
DROP TABLE usage_raw;
ALTER TABLE usage_raw_typed RENAME TO usage_raw;

INSERT INTO usage_tiers_typed
SELECT granularity, ts, uid, kind,
       CASE WHEN reason LIKE 'via:%' OR reason LIKE 'ns:%' THEN '' ELSE reason END,
       CASE WHEN reason LIKE 'via:%' THEN CAST(substr(reason, 5) AS INTEGER) ELSE -1 END,
       CASE WHEN reason LIKE 'ns:%' THEN CAST(substr(reason, 4) AS INTEGER) ELSE 0 END,
       CASE WHEN reason LIKE 'ns:%'
            THEN CAST(substr(reason, 4 + instr(substr(reason, 4), ':')) AS INTEGER)
            ELSE -1 END,
       program, remote, protocol, port, rx_bytes, tx_bytes, rx_packets, tx_packets
FROM usage_tiers;
-- (The triggers of 0014 go with it; made again below over the new key.)
DROP TABLE usage_tiers;
ALTER TABLE usage_tiers_typed RENAME TO usage_tiers;

INSERT INTO usage_totals_typed
SELECT granularity, ts, uid, kind,
       CASE WHEN reason LIKE 'via:%' OR reason LIKE 'ns:%' THEN '' ELSE reason END,
       CASE WHEN reason LIKE 'via:%' THEN CAST(substr(reason, 5) AS INTEGER) ELSE -1 END,
       CASE WHEN reason LIKE 'ns:%' THEN CAST(substr(reason, 4) AS INTEGER) ELSE 0 END,
       CASE WHEN reason LIKE 'ns:%'
            THEN CAST(substr(reason, 4 + instr(substr(reason, 4), ':')) AS INTEGER)
            ELSE -1 END,
       rx_bytes, tx_bytes, rx_packets, tx_packets
FROM usage_totals;
DROP TABLE usage_totals;
ALTER TABLE usage_totals_typed RENAME TO usage_totals;

INSERT INTO usage_keys_typed
SELECT granularity, ts, uid, kind,
       CASE WHEN reason LIKE 'via:%' OR reason LIKE 'ns:%' THEN '' ELSE reason END,
       CASE WHEN reason LIKE 'via:%' THEN CAST(substr(reason, 5) AS INTEGER) ELSE -1 END,
       CASE WHEN reason LIKE 'ns:%' THEN CAST(substr(reason, 4) AS INTEGER) ELSE 0 END,
       CASE WHEN reason LIKE 'ns:%'
            THEN CAST(substr(reason, 4 + instr(substr(reason, 4), ':')) AS INTEGER)
            ELSE -1 END,
       program, remote, protocol, port, rx_bytes, tx_bytes, rx_packets, tx_packets
FROM usage_keys;
DROP TABLE usage_keys;
ALTER TABLE usage_keys_typed RENAME TO usage_keys;

INSERT INTO usage_tier_days_typed
SELECT ts, uid, kind,
       CASE WHEN reason LIKE 'via:%' OR reason LIKE 'ns:%' THEN '' ELSE reason END,
       CASE WHEN reason LIKE 'via:%' THEN CAST(substr(reason, 5) AS INTEGER) ELSE -1 END,
       CASE WHEN reason LIKE 'ns:%' THEN CAST(substr(reason, 4) AS INTEGER) ELSE 0 END,
       CASE WHEN reason LIKE 'ns:%'
            THEN CAST(substr(reason, 4 + instr(substr(reason, 4), ':')) AS INTEGER)
            ELSE -1 END,
       program, remote, protocol, port, rx_bytes, tx_bytes, rx_packets, tx_packets
FROM usage_tier_days;
DROP TABLE usage_tier_days;
ALTER TABLE usage_tier_days_typed RENAME TO usage_tier_days;

-- usage_tier_days kept equal to the hourly rows (as 0014), keyed by the new columns too.
CREATE TRIGGER usage_tier_days_insert AFTER INSERT ON usage_tiers
WHEN NEW.granularity = 3600
BEGIN
    INSERT INTO usage_tier_days
    VALUES (NEW.ts - NEW.ts % 86400, NEW.uid, NEW.kind, NEW.reason, NEW.via_uid,
            NEW.container, NEW.container_uid, NEW.program, NEW.remote, NEW.protocol,
            NEW.port, NEW.rx_bytes, NEW.tx_bytes, NEW.rx_packets, NEW.tx_packets)
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
      AND remote = NEW.remote AND protocol = NEW.protocol AND port = NEW.port;
END;

-- The views of 0010, reading the columns: the same columns, the same rows.
CREATE VIEW usage AS
SELECT u.ts,
       CASE u.kind WHEN 0 THEN 'user' WHEN 1 THEN 'unattributed' ELSE 'excluded' END AS kind,
       nullif(u.uid, -1) AS uid, p.name AS program, nullif(u.reason, '') AS reason,
       u.protocol, CASE u.direction WHEN 1 THEN 'out' WHEN 2 THEN 'in' END AS direction,
       r.addr AS remote_addr, u.port,
       u.rx_bytes, u.tx_bytes, u.rx_packets, u.tx_packets,
       nullif(u.via_uid, -1) AS via_uid, c.name AS container,
       nullif(u.container_uid, -1) AS container_uid
FROM usage_raw u LEFT JOIN programs p ON p.id = u.program JOIN remotes r ON r.id = u.remote
     LEFT JOIN containers c ON u.container <> 0 AND c.id = u.container;

CREATE VIEW usage_rollup AS
SELECT CASE u.granularity WHEN 3600 THEN 'hour' ELSE 'day' END AS granularity, u.ts,
       CASE u.kind WHEN 0 THEN 'user' WHEN 1 THEN 'unattributed' ELSE 'excluded' END AS kind,
       nullif(u.uid, -1) AS uid, p.name AS program, nullif(u.reason, '') AS reason,
       u.protocol, r.addr AS remote_addr, u.port,
       u.rx_bytes, u.tx_bytes, u.rx_packets, u.tx_packets,
       nullif(u.via_uid, -1) AS via_uid, c.name AS container,
       nullif(u.container_uid, -1) AS container_uid
FROM usage_tiers u LEFT JOIN programs p ON p.id = u.program JOIN remotes r ON r.id = u.remote
     LEFT JOIN containers c ON u.container <> 0 AND c.id = u.container;

CREATE VIEW usage_all AS
SELECT ts, kind, uid, program, reason, protocol, direction, remote_addr, port,
       rx_bytes, tx_bytes, rx_packets, tx_packets, via_uid, container, container_uid
FROM usage
UNION ALL
SELECT ts, kind, uid, program, reason, protocol, NULL, remote_addr, port,
       rx_bytes, tx_bytes, rx_packets, tx_packets, via_uid, container, container_uid
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
