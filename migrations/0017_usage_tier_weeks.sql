-- Usage per key per week over usage_tier_days (issue 26), so that `top --by remote|program|
-- port|via|container|cgroup` (and their combinations) over the weeks of the hourly tier
-- reads a row per key and week instead of one per key and day: on a busy host a week holds
-- a fifth of its days' rows (the same keys recur from day to day). Append-only: never edit
-- a shipped migration.
--
-- A week is 604,800 seconds from the Unix epoch (it starts on a Thursday, 00:00 UTC);
-- usage_tier_weeks holds, for every week, the sum of the day rows dated in it, per key, and
-- how many day rows that is (`days`). Triggers keep it equal to usage_tier_days whoever
-- writes it: its rows are added by the triggers of usage_tiers (0016), and deleted a day
-- at a time by the hourly -> daily rollup (store::retention), which takes them out of their
-- week here; a week's row goes when its last day row goes, so a key never reads as a row
-- of nothing that the days do not have.
CREATE TABLE usage_tier_weeks (
    ts            INTEGER NOT NULL,   -- start of the week (a multiple of 604800)
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
    days          INTEGER NOT NULL,   -- the usage_tier_days rows summed here
    PRIMARY KEY (ts, uid, kind, reason, via_uid, container, container_uid, program, cgroup,
                 remote, protocol, port)
) WITHOUT ROWID;

INSERT INTO usage_tier_weeks
SELECT ts - ts % 604800 AS w, uid, kind, reason, via_uid, container, container_uid, program,
       cgroup, remote, protocol, port, sum(rx_bytes), sum(tx_bytes), sum(rx_packets),
       sum(tx_packets), count(*)
FROM usage_tier_days
GROUP BY w, uid, kind, reason, via_uid, container, container_uid, program, cgroup, remote,
         protocol, port;

CREATE TRIGGER usage_tier_weeks_insert AFTER INSERT ON usage_tier_days
BEGIN
    INSERT INTO usage_tier_weeks
    VALUES (NEW.ts - NEW.ts % 604800, NEW.uid, NEW.kind, NEW.reason, NEW.via_uid,
            NEW.container, NEW.container_uid, NEW.program, NEW.cgroup, NEW.remote,
            NEW.protocol, NEW.port, NEW.rx_bytes, NEW.tx_bytes, NEW.rx_packets,
            NEW.tx_packets, 1)
    ON CONFLICT DO UPDATE SET rx_bytes = rx_bytes + excluded.rx_bytes,
        tx_bytes = tx_bytes + excluded.tx_bytes,
        rx_packets = rx_packets + excluded.rx_packets,
        tx_packets = tx_packets + excluded.tx_packets,
        days = days + 1;
END;

-- A day row added to (its key columns do not change).
CREATE TRIGGER usage_tier_weeks_update AFTER UPDATE ON usage_tier_days
BEGIN
    UPDATE usage_tier_weeks
    SET rx_bytes = rx_bytes + NEW.rx_bytes - OLD.rx_bytes,
        tx_bytes = tx_bytes + NEW.tx_bytes - OLD.tx_bytes,
        rx_packets = rx_packets + NEW.rx_packets - OLD.rx_packets,
        tx_packets = tx_packets + NEW.tx_packets - OLD.tx_packets
    WHERE ts = NEW.ts - NEW.ts % 604800 AND uid = NEW.uid AND kind = NEW.kind
      AND reason = NEW.reason AND via_uid = NEW.via_uid AND container = NEW.container
      AND container_uid = NEW.container_uid AND program = NEW.program
      AND cgroup = NEW.cgroup AND remote = NEW.remote AND protocol = NEW.protocol
      AND port = NEW.port;
END;

CREATE TRIGGER usage_tier_weeks_delete AFTER DELETE ON usage_tier_days
BEGIN
    UPDATE usage_tier_weeks
    SET rx_bytes = rx_bytes - OLD.rx_bytes,
        tx_bytes = tx_bytes - OLD.tx_bytes,
        rx_packets = rx_packets - OLD.rx_packets,
        tx_packets = tx_packets - OLD.tx_packets,
        days = days - 1
    WHERE ts = OLD.ts - OLD.ts % 604800 AND uid = OLD.uid AND kind = OLD.kind
      AND reason = OLD.reason AND via_uid = OLD.via_uid AND container = OLD.container
      AND container_uid = OLD.container_uid AND program = OLD.program
      AND cgroup = OLD.cgroup AND remote = OLD.remote AND protocol = OLD.protocol
      AND port = OLD.port;
    DELETE FROM usage_tier_weeks
    WHERE ts = OLD.ts - OLD.ts % 604800 AND uid = OLD.uid AND kind = OLD.kind
      AND reason = OLD.reason AND via_uid = OLD.via_uid AND container = OLD.container
      AND container_uid = OLD.container_uid AND program = OLD.program
      AND cgroup = OLD.cgroup AND remote = OLD.remote AND protocol = OLD.protocol
      AND port = OLD.port AND days = 0;
END;
