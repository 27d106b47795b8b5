-- netledger schema, version 3: the connection log written by `netledger run` (issue 4).
-- Append-only: never edit a shipped migration.

-- Program names of the connection log, stored once; `connection_log` refers to them by id.
CREATE TABLE programs (
    id   INTEGER PRIMARY KEY,
    name TEXT    NOT NULL UNIQUE
);

-- One row per finished connection (a conntrack flow whose DESTROY event the daemon
-- received). Everything is packed into the key, so a row costs its bytes plus a few of
-- SQLite's, and an identical row cannot be stored twice. Read it with `netledger log`
-- (`--json` for tools); the encoding (all integers unsigned; varint = LEB128):
--
--   5 bytes  end time, milliseconds since 2024-01-01T00:00:00Z, big-endian (the key
--            sorts by end time, so a period is a key range)
--   varint   duration in milliseconds (start = end - duration)
--   1 byte   flags: bits 0-1 direction (0 unknown, 1 out: a local socket initiated,
--            2 in: a remote peer did); bit 2 IPv6 (addresses are 16 bytes, else 4);
--            bit 3 the reply tuple is not the mirror of the original (NAT) and follows;
--            bit 4 uid follows; bit 5 program follows; bits 6-7 protocol class:
--            0 TCP, 1 UDP, 2 other (a protocol byte follows), 3 extended (an extension
--            byte, then a protocol byte, follow)
--   [class 3] 1 byte extension: bit 0 no counters (accounting was off when the flow
--            began); bit 1 a zone follows at the end
--   [class 2, 3] 1 byte IP protocol number
--   original tuple: source address, destination address, source port (2 bytes,
--            big-endian), destination port (2 bytes)
--   [bit 3]  reply tuple, same layout (post-NAT addresses)
--   [bit 4]  varint uid
--   [bit 5]  varint programs.id
--   [unless no counters] varint original packets, original bytes, reply packets,
--            reply bytes (conntrack's final counters; bytes at the IP layer)
--   [zone]   varint conntrack zone
CREATE TABLE connection_log (
    rec BLOB PRIMARY KEY
) WITHOUT ROWID;
