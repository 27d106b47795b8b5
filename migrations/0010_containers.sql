-- Containers (issue 14): traffic of processes in another network namespace of this host
-- (Docker, Podman, LXC/Incus, systemd-nspawn, `ip netns`) is charged to the user who made
-- it, and every such row also names the container. Append-only: never edit a shipped
-- migration. No table is rebuilt: a year's database migrates in moments.

-- The containers seen, by their stable readable name (an `ip netns` name, `docker-<id>`,
-- `libpod-<id>`, `machine-<name>`, `lxc.payload.<name>`, else `netns:[inode]`), stored
-- once: usage rows and the connection log refer to them by id.
CREATE TABLE containers (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);

-- flow_state.container: the name of the container whose socket the flow was found
-- through (NULL: a host socket, and every flow before schema 10); container_uid: that
-- socket's uid as the container sees it (through its user namespace). A flow keeps them
-- across passes, like its owner, after its socket is gone.
ALTER TABLE flow_state ADD COLUMN container TEXT;
ALTER TABLE flow_state ADD COLUMN container_uid INTEGER;

-- The connection log (layout in 0003_connections.sql) gains extension bit 3 (class 3): a
-- varint containers.id and a varint the uid inside the container follow, at the end (after
-- the zone, and after the delegating uid of bit 2, which never comes with it). Its `uid`
-- is the one charged, as the host sees it.

-- Usage rows keep the container in `reason`, as 0007 keeps the service: a user or
-- excluded row of a container's traffic has 'ns:ID:UID', ID the containers.id and UID
-- the uid inside the container (a container's flow never goes through a delegating
-- service, so it never combines with 'via:UID'). usage_totals and usage_keys are keyed by
-- reason, so they carry it too. The views show it as the columns container (the name;
-- NULL for the host's traffic) and container_uid; never as reason or via_uid.
DROP VIEW usage_all;
DROP VIEW usage;
DROP VIEW usage_rollup;

CREATE VIEW usage AS
SELECT u.ts,
       CASE u.kind WHEN 0 THEN 'user' WHEN 1 THEN 'unattributed' ELSE 'excluded' END AS kind,
       nullif(u.uid, -1) AS uid, p.name AS program,
       CASE WHEN u.reason LIKE 'via:%' OR u.reason LIKE 'ns:%' THEN NULL
            ELSE nullif(u.reason, '') END AS reason,
       u.protocol, CASE u.direction WHEN 1 THEN 'out' WHEN 2 THEN 'in' END AS direction,
       r.addr AS remote_addr, u.port,
       u.rx_bytes, u.tx_bytes, u.rx_packets, u.tx_packets,
       CASE WHEN u.reason LIKE 'via:%' THEN CAST(substr(u.reason, 5) AS INTEGER) END AS via_uid,
       c.name AS container,
       CASE WHEN u.reason LIKE 'ns:%'
            THEN CAST(substr(u.reason, 4 + instr(substr(u.reason, 4), ':')) AS INTEGER)
       END AS container_uid
FROM usage_raw u LEFT JOIN programs p ON p.id = u.program JOIN remotes r ON r.id = u.remote
     LEFT JOIN containers c
            ON u.reason LIKE 'ns:%' AND c.id = CAST(substr(u.reason, 4) AS INTEGER);

CREATE VIEW usage_rollup AS
SELECT CASE u.granularity WHEN 3600 THEN 'hour' ELSE 'day' END AS granularity, u.ts,
       CASE u.kind WHEN 0 THEN 'user' WHEN 1 THEN 'unattributed' ELSE 'excluded' END AS kind,
       nullif(u.uid, -1) AS uid, p.name AS program,
       CASE WHEN u.reason LIKE 'via:%' OR u.reason LIKE 'ns:%' THEN NULL
            ELSE nullif(u.reason, '') END AS reason,
       u.protocol, r.addr AS remote_addr, u.port,
       u.rx_bytes, u.tx_bytes, u.rx_packets, u.tx_packets,
       CASE WHEN u.reason LIKE 'via:%' THEN CAST(substr(u.reason, 5) AS INTEGER) END AS via_uid,
       c.name AS container,
       CASE WHEN u.reason LIKE 'ns:%'
            THEN CAST(substr(u.reason, 4 + instr(substr(u.reason, 4), ':')) AS INTEGER)
       END AS container_uid
FROM usage_tiers u LEFT JOIN programs p ON p.id = u.program JOIN remotes r ON r.id = u.remote
     LEFT JOIN containers c
            ON u.reason LIKE 'ns:%' AND c.id = CAST(substr(u.reason, 4) AS INTEGER);

CREATE VIEW usage_all AS
SELECT ts, kind, uid, program, reason, protocol, direction, remote_addr, port,
       rx_bytes, tx_bytes, rx_packets, tx_packets, via_uid, container, container_uid
FROM usage
UNION ALL
SELECT ts, kind, uid, program, reason, protocol, NULL, remote_addr, port,
       rx_bytes, tx_bytes, rx_packets, tx_packets, via_uid, container, container_uid
FROM usage_rollup;
