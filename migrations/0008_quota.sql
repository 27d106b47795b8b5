-- Quotas (issue 19): one-off extra allowances, and which alert levels the on_quota hook
-- has already been run for.
--
-- A grant adds bytes to a user's allowance for one billing cycle only: the cycle is
-- named by its start (epoch seconds of local midnight on cycle_day), so a grant made in
-- November does nothing in December. Several grants in a cycle add up.
CREATE TABLE quota_grants (
    id          INTEGER PRIMARY KEY,
    uid         INTEGER NOT NULL,
    cycle_start INTEGER NOT NULL,
    bytes       INTEGER NOT NULL CHECK (bytes > 0),
    granted_at  INTEGER NOT NULL
);
CREATE INDEX quota_grants_cycle ON quota_grants (cycle_start, uid);

-- A row per user, cycle and level ('warning', 'critical') whose hook has been started:
-- inserted in its own transaction before the hook runs, so the hook runs once per level
-- per cycle across passes, flushes and restarts.
CREATE TABLE quota_alerts (
    uid         INTEGER NOT NULL,
    cycle_start INTEGER NOT NULL,
    level       TEXT    NOT NULL CHECK (level IN ('warning', 'critical')),
    fired_at    INTEGER NOT NULL,
    used        INTEGER NOT NULL,
    allowance   INTEGER NOT NULL,
    PRIMARY KEY (uid, cycle_start, level)
) WITHOUT ROWID;
