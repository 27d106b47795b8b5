-- Usage per key per UTC day over the hourly tier (issue 26), so that `top --by remote|
-- program|port|via|container` over months reads a row per key and day instead of one per
-- key and hour. Append-only: never edit a shipped migration.
--
-- usage_tier_days holds, for every UTC day, the sum of the hourly rows (usage_tiers,
-- granularity 3600) dated in it, per uid, kind, reason, program, remote, protocol and port:
-- a day wholly inside a report's window is read here, its hours at the window's edges from
-- the hourly tier. Triggers keep it equal to the hourly rows whoever writes them (the
-- raw -> hourly rollup inserts an hour and adds to rows a late pass left in it);
-- the hourly -> daily rollup, the only deleter of hourly rows, deletes a whole day of them
-- and that day's sums in the same transaction (store::retention).
CREATE TABLE usage_tier_days (
    ts          INTEGER NOT NULL,   -- start of the UTC day
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
    PRIMARY KEY (ts, uid, kind, reason, program, remote, protocol, port)
) WITHOUT ROWID;

INSERT INTO usage_tier_days
SELECT ts - ts % 86400 AS d, uid, kind, reason, program, remote, protocol, port,
       sum(rx_bytes), sum(tx_bytes), sum(rx_packets), sum(tx_packets)
FROM usage_tiers WHERE granularity = 3600
GROUP BY d, uid, kind, reason, program, remote, protocol, port;

CREATE TRIGGER usage_tier_days_insert AFTER INSERT ON usage_tiers
WHEN NEW.granularity = 3600
BEGIN
    INSERT INTO usage_tier_days
    VALUES (NEW.ts - NEW.ts % 86400, NEW.uid, NEW.kind, NEW.reason, NEW.program, NEW.remote,
            NEW.protocol, NEW.port, NEW.rx_bytes, NEW.tx_bytes, NEW.rx_packets,
            NEW.tx_packets)
    ON CONFLICT DO UPDATE SET rx_bytes = rx_bytes + excluded.rx_bytes,
        tx_bytes = tx_bytes + excluded.tx_bytes,
        rx_packets = rx_packets + excluded.rx_packets,
        tx_packets = tx_packets + excluded.tx_packets;
END;

-- An hourly row added to (its key is the day row's key: the key columns do not change).
CREATE TRIGGER usage_tier_days_update AFTER UPDATE ON usage_tiers
WHEN NEW.granularity = 3600
BEGIN
    UPDATE usage_tier_days
    SET rx_bytes = rx_bytes + NEW.rx_bytes - OLD.rx_bytes,
        tx_bytes = tx_bytes + NEW.tx_bytes - OLD.tx_bytes,
        rx_packets = rx_packets + NEW.rx_packets - OLD.rx_packets,
        tx_packets = tx_packets + NEW.tx_packets - OLD.tx_packets
    WHERE ts = NEW.ts - NEW.ts % 86400 AND uid = NEW.uid AND kind = NEW.kind
      AND reason = NEW.reason AND program = NEW.program AND remote = NEW.remote
      AND protocol = NEW.protocol AND port = NEW.port;
END;
