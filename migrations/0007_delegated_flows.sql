-- Traffic users move through a service (issue 16): sshd accepts a connection as root, then
-- the user's own process reads and writes it. A socket of a delegating uid (root by
-- default) held by the processes of exactly one other uid is charged to that uid, "via"
-- the socket's uid. Append-only: never edit a shipped migration.

-- flow_state.via: NULL the socket's own uid is charged (every flow before schema 6);
-- >= 0 charged to `uid` through a socket of this delegating uid; -1 the service's own (no
-- other uid's process held it while it was young); -2 ambiguous (several other uids'
-- processes held it: `uid` is the socket's); -3 pending: its charge is held back, and its
-- counters are the last ones seen, none of them charged yet.
ALTER TABLE flow_state ADD COLUMN via INTEGER;

-- The connection log (layout in 0003_connections.sql) gains extension bit 2 (class 3): a
-- varint, the uid of the delegating service's socket the connection went through, follows
-- the zone. Its `uid` is then the holder's that was charged.

-- Usage rows keep the service in `reason`, which every user and excluded row had as ''
-- before schema 6 (so no table is rebuilt): 'via:UID' when charged through a delegating
-- uid's socket, 'ambiguous-holders' when the socket's uid was charged because several
-- users' processes held it. Unattributed rows keep their reasons. The views show the first
-- as the column via_uid (NULL otherwise), the second as reason.
DROP VIEW usage_all;
DROP VIEW usage;
DROP VIEW usage_rollup;

CREATE VIEW usage AS
SELECT u.ts,
       CASE u.kind WHEN 0 THEN 'user' WHEN 1 THEN 'unattributed' ELSE 'excluded' END AS kind,
       nullif(u.uid, -1) AS uid, p.name AS program,
       CASE WHEN u.reason LIKE 'via:%' THEN NULL ELSE nullif(u.reason, '') END AS reason,
       u.protocol, CASE u.direction WHEN 1 THEN 'out' WHEN 2 THEN 'in' END AS direction,
       r.addr AS remote_addr, u.port,
       u.rx_bytes, u.tx_bytes, u.rx_packets, u.tx_packets,
       CASE WHEN u.reason LIKE 'via:%' THEN CAST(substr(u.reason, 5) AS INTEGER) END AS via_uid
FROM usage_raw u LEFT JOIN programs p ON p.id = u.program JOIN remotes r ON r.id = u.remote;

CREATE VIEW usage_rollup AS
SELECT CASE u.granularity WHEN 3600 THEN 'hour' ELSE 'day' END AS granularity, u.ts,
       CASE u.kind WHEN 0 THEN 'user' WHEN 1 THEN 'unattributed' ELSE 'excluded' END AS kind,
       nullif(u.uid, -1) AS uid, p.name AS program,
       CASE WHEN u.reason LIKE 'via:%' THEN NULL ELSE nullif(u.reason, '') END AS reason,
       u.protocol, r.addr AS remote_addr, u.port,
       u.rx_bytes, u.tx_bytes, u.rx_packets, u.tx_packets,
       CASE WHEN u.reason LIKE 'via:%' THEN CAST(substr(u.reason, 5) AS INTEGER) END AS via_uid
FROM usage_tiers u LEFT JOIN programs p ON p.id = u.program JOIN remotes r ON r.id = u.remote;

CREATE VIEW usage_all AS
SELECT ts, kind, uid, program, reason, protocol, direction, remote_addr, port,
       rx_bytes, tx_bytes, rx_packets, tx_packets, via_uid
FROM usage
UNION ALL
SELECT ts, kind, uid, program, reason, protocol, NULL, remote_addr, port,
       rx_bytes, tx_bytes, rx_packets, tx_packets, via_uid
FROM usage_rollup;
