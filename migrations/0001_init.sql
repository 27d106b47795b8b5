-- netledger schema, version 1. Append-only: never edit a shipped migration; add 0002_….
-- Times are UTC epoch seconds. Bytes and packets are INTEGER.

-- One row per accounting pass; totals reconcile:
-- attributed + unattributed + excluded = bytes conntrack counted since the previous pass.
CREATE TABLE passes (
    id                     INTEGER PRIMARY KEY,
    started_at             INTEGER NOT NULL,
    finished_at            INTEGER NOT NULL,
    mode                   TEXT    NOT NULL,
    sockets                INTEGER NOT NULL,
    flows                  INTEGER NOT NULL,
    new_flows              INTEGER NOT NULL,
    flows_without_counters INTEGER NOT NULL,
    resets                 INTEGER NOT NULL,
    pruned                 INTEGER NOT NULL,
    bad_lines              INTEGER NOT NULL,
    skipped_messages       INTEGER NOT NULL,
    attributed_rx_bytes    INTEGER NOT NULL,
    attributed_tx_bytes    INTEGER NOT NULL,
    unattributed_rx_bytes  INTEGER NOT NULL,
    unattributed_tx_bytes  INTEGER NOT NULL,
    excluded_rx_bytes      INTEGER NOT NULL,
    excluded_tx_bytes      INTEGER NOT NULL
);

-- uid → name, resolved when the uid was seen; kept after the account is deleted.
CREATE TABLE users (
    uid        INTEGER PRIMARY KEY,
    name       TEXT,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);

-- Traffic charged by each pass, aggregated per key.
--   kind 'user':         charged to uid.
--   kind 'unattributed': counted, uid NULL, reason says why.
--   kind 'excluded':     remote end in a local network; charged to nobody (uid kept when known).
-- port is the service port: the remote port of outgoing flows, the local port of incoming ones.
CREATE TABLE usage (
    id          INTEGER PRIMARY KEY,
    pass_id     INTEGER NOT NULL REFERENCES passes(id),
    ts          INTEGER NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('user', 'unattributed', 'excluded')),
    uid         INTEGER,
    program     TEXT,
    reason      TEXT,
    protocol    INTEGER NOT NULL,
    direction   TEXT CHECK (direction IN ('out', 'in')),
    remote_addr TEXT    NOT NULL,
    port        INTEGER NOT NULL,
    rx_bytes    INTEGER NOT NULL,
    tx_bytes    INTEGER NOT NULL,
    rx_packets  INTEGER NOT NULL,
    tx_packets  INTEGER NOT NULL,
    CHECK (kind <> 'user' OR uid IS NOT NULL),
    CHECK (kind <> 'unattributed' OR (uid IS NULL AND reason IS NOT NULL))
);
CREATE INDEX usage_ts ON usage (ts);
CREATE INDEX usage_uid_ts ON usage (uid, ts);

-- Per-flow counters at the last sighting, so the next pass (even a new process started
-- by a timer) charges exactly the difference. Identity: (zone, original tuple, ct_id).
CREATE TABLE flow_state (
    zone          INTEGER NOT NULL,
    protocol      INTEGER NOT NULL,
    src           TEXT    NOT NULL,
    dst           TEXT    NOT NULL,
    sport         INTEGER NOT NULL,
    dport         INTEGER NOT NULL,
    ct_id         INTEGER NOT NULL,
    orig_packets  INTEGER NOT NULL,
    orig_bytes    INTEGER NOT NULL,
    reply_packets INTEGER NOT NULL,
    reply_bytes   INTEGER NOT NULL,
    uid           INTEGER,
    program       TEXT,
    direction     TEXT,
    first_seen    INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    missing       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (zone, protocol, src, dst, sport, dport, ct_id)
) WITHOUT ROWID;

-- Views for people who query the database directly. period is the UTC calendar day or
-- month. Unattributed traffic appears with uid NULL; excluded local traffic is left out
-- (see the passes table for its totals).
CREATE VIEW usage_daily AS
SELECT strftime('%Y-%m-%d', u.ts, 'unixepoch') AS period,
       u.uid                                   AS uid,
       n.name                                  AS user,
       sum(u.rx_bytes)                         AS rx_bytes,
       sum(u.tx_bytes)                         AS tx_bytes,
       sum(u.rx_packets)                       AS rx_packets,
       sum(u.tx_packets)                       AS tx_packets
FROM usage u LEFT JOIN users n ON n.uid = u.uid
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
FROM usage u LEFT JOIN users n ON n.uid = u.uid
WHERE u.kind <> 'excluded'
GROUP BY period, u.uid;
