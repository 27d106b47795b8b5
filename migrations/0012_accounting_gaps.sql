-- Times accounting may have been off, as netledger found them (issue 25): its nftables
-- table deleted or re-created (a `flush ruleset`, a firewall reload), conntrack
-- accounting switched off, a notrack rule, a full conntrack table. One row per finding
-- (a timer's setup keeps its finding in /run, and passes record a (cause, detected_at)
-- only once however many read it).
CREATE TABLE accounting_gaps (
    id          INTEGER PRIMARY KEY,
    detected_at INTEGER NOT NULL,   -- UTC epoch seconds
    cause       TEXT    NOT NULL,   -- table-gone, table-recreated, rule-gone, acct-off, notrack, table-full
    off_ms      INTEGER,            -- how long accounting may have been off; NULL: unknown
    detail      TEXT    NOT NULL    -- the line netledger logged
);
CREATE INDEX accounting_gaps_found ON accounting_gaps (cause, detected_at);
