-- The connection log's long connections, indexed apart (issue 26), so that `summary` of a
-- day reads that day's connections and not the whole log after it. Append-only: never edit
-- a shipped migration. An index, no table rebuilt: SQLite keeps it as rows are inserted,
-- whatever writes them.
--
-- The log is keyed by end time (migrations/0003_connections.sql): the connections that
-- started in a day [d, d + 1 day) end in [d, d + 1 day + their duration). A record's
-- duration is the LEB128 varint after the 5 bytes of end time; it takes 4 bytes or more,
-- every one of the first three with its high bit set, exactly when the connection lasted
-- 2^21 ms (about 35 minutes) or longer. So the day's connections are those that ended in
-- [d, d + 1 day + 2^21 ms) in the log's own key range, and the long ones that ended after
-- that, which this partial index holds (a few in a thousand on a busy host).
CREATE INDEX connection_log_long ON connection_log (rec)
WHERE substr(rec, 6, 1) >= x'80' AND substr(rec, 7, 1) >= x'80' AND substr(rec, 8, 1) >= x'80';
